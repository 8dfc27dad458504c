"""Pure decisions (no trio, no I/O): retries, usage ledger, merges, intensity, cache keys."""

__all__: list[str] = []
