"""The ``raygent`` command line. Exit codes: 0 ok, 1 failure, 2 usage or configuration error.

Each command group lives in its own module and registers itself on :data:`app` when imported here.
"""

from raygent.cli import approvals as _approvals  # noqa: F401  (registers `raygent approvals`)
from raygent.cli import audit as _audit  # noqa: F401  (registers `raygent audit`)
from raygent.cli import audit_signing as _audit_signing  # noqa: F401  (`raygent audit checkpoint|export`)
from raygent.cli import batch as _batch  # noqa: F401  (registers `raygent batch`)
from raygent.cli import bench as _bench  # noqa: F401  (registers `raygent bench`)
from raygent.cli import cluster as _cluster  # noqa: F401  (registers `raygent cluster`, `raygent deploy`)
from raygent.cli import governance as _governance  # noqa: F401  (registers `raygent governance`)
from raygent.cli import identity as _identity  # noqa: F401  (registers `raygent identity`)
from raygent.cli import policy as _policy  # noqa: F401  (registers `raygent policy`)
from raygent.cli import replay as _replay  # noqa: F401  (registers `raygent replay`)
from raygent.cli import report as _report  # noqa: F401  (registers `raygent report`)
from raygent.cli import test_tools as _test_tools  # noqa: F401  (registers `raygent test-tools`)
from raygent.cli import token as _token  # noqa: F401  (registers `raygent token`)
from raygent.cli._app import app, main

__all__ = ["app", "main"]
