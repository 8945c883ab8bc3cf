"""raygent.core.store."""
