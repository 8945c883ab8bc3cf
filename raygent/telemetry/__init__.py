"""raygent.telemetry."""
