"""`raygent up` tells how to get a token for a governed fleet (and nothing for an open one)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from raygent.cli._app import _token_hint
from raygent.core.fleetfile import load_fleet

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "support_desk"


def test_the_hint_names_a_role_that_may_run_the_agent_and_the_command_works(tmp_path: Path) -> None:
    governed = EXAMPLES / "governed.yaml"
    fleet = load_fleet(governed, state_dir=tmp_path)
    hint = _token_hint(fleet, governed, tmp_path, "support")
    assert hint == f"raygent token issue -f {governed} --state-dir {tmp_path} --role customer --sub you"
    argv = shlex.split(hint)
    argv[0] = str(Path(sys.executable).parent / "raygent")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2  # a JWT: header.payload.signature


def test_no_hint_for_a_fleet_without_auth(tmp_path: Path) -> None:
    fleet = load_fleet(EXAMPLES / "fleet.yaml", state_dir=tmp_path)
    assert _token_hint(fleet, EXAMPLES / "fleet.yaml", None, "support") == ""
