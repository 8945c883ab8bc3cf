"""`raygent test-tools` against the real legacy counterparts, through its real entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from legacy_helpers import EXAMPLE

pytestmark = pytest.mark.integration

RAYGENT = str(Path(sys.executable).parent / "raygent")


def fleet_copy(tmp_path: Path, *, queue: str, wsdl: str) -> Path:
    """The example directory with this test's queue and SOAP address."""
    target = tmp_path / "legacy"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".raygent", "__pycache__"))
    data = yaml.safe_load((target / "fleet.yaml").read_text())
    for name in ("lookup_order", "lookup_order_async"):
        data["tools"][name]["transport"]["request_queue"] = queue
    data["tools"]["customer_profile"]["wsdl"] = wsdl
    (target / "fleet.yaml").write_text(yaml.safe_dump(data))
    return target / "fleet.yaml"


def run_test_tools(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, "test-tools", *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_every_tool_of_the_example_passes(
    tmp_path: Path, rabbit_queue: str, soap_service: str, start_responder: Any
) -> None:
    start_responder(rabbit_queue)
    fleet = fleet_copy(tmp_path, queue=rabbit_queue, wsdl=soap_service)
    done = run_test_tools(str(fleet), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks: 20 pass, 0 fail, 0 skip" in done.stdout


def test_a_drifted_backend_fails_its_sample_and_exits_1(
    tmp_path: Path, rabbit_queue: str, soap_service: str, start_responder: Any
) -> None:
    start_responder(rabbit_queue)
    fleet = fleet_copy(tmp_path, queue=rabbit_queue, wsdl=soap_service)
    samples = fleet.with_name("fleet.samples.yaml")
    data = yaml.safe_load(samples.read_text())
    data["lookup_order"]["result"]["status"] = "lost"  # the recording no longer matches the backend
    samples.write_text(yaml.safe_dump(data))
    done = run_test_tools(str(fleet), "--tool", "lookup_order", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 1
    assert "checks: 4 pass, 1 fail, 0 skip" in done.stdout
    assert "1 tool check(s) failed" in done.stderr


def test_unknown_tool_is_a_usage_error(tmp_path: Path) -> None:
    done = run_test_tools(str(EXAMPLE / "fleet.yaml"), "--tool", "nope")
    assert done.returncode == 2 and "no tool 'nope'" in done.stderr
