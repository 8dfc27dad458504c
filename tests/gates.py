"""An agent that holds every call until the test releases it (to look at a run mid-flight)."""

from __future__ import annotations

from typing import Any

import trio


def gate() -> tuple[trio.Event, Any]:
    """``(release, agent)``: ``agent(data)`` waits for ``release.set()``, then returns ``data``."""
    release = trio.Event()

    async def wait(data: Any) -> Any:
        await release.wait()
        return data

    return release, wait
