"""raygent: governed enterprise AI agents as a multi-agent actor system on Ray."""

__version__ = "0.1.0"
__all__ = ["__version__"]
