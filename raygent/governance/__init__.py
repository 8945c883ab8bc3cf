"""raygent.governance."""
