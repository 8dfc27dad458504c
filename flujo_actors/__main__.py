"""``python -m flujo_actors``: the command line (see :mod:`flujo_actors.cli`)."""

import sys

from .cli import main

sys.exit(main())
