"""The ``raygent`` command line. Exit codes: 0 ok, 1 failure, 2 usage or configuration error.

Each command group lives in its own module and registers itself on :data:`app` when imported here.
"""

from raygent.cli import audit as _audit  # noqa: F401  (registers `raygent audit`)
from raygent.cli._app import app, main

__all__ = ["app", "main"]
