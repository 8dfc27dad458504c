"""Optional telemetry exporters (each imports its third-party package only when used)."""

__all__: list[str] = []
