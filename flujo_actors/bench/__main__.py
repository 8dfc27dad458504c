"""Entry point of ``python -m flujo_actors.bench`` and the ``flujo-actors-bench`` script."""

from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
