"""Bridges between trio and asyncio, both ways.

* :mod:`.steps`: agents marked ``event_loop="asyncio"`` (and pydantic-ai agents)
  run on an asyncio loop opened for the run (trio-asyncio).
* :mod:`.host`: asyncio applications run pipelines with ``Flujo.run_asyncio`` /
  ``Flujo.stream_asyncio`` (trio in guest mode on the host's loop).

Importing this package imports neither asyncio nor trio-asyncio.
"""

__all__: list[str] = []
