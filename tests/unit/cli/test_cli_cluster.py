"""`raygent deploy` writes a Serve config that Serve accepts and that builds the fleet's graph;
`raygent cluster` runs Ray's own launcher commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "support_desk" / "fleet.yaml"
RAYGENT = str(Path(sys.executable).parent / "raygent")
RAY = str(Path(sys.executable).parent / "ray")


def raygent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_deploy_writes_a_serve_config_that_builds_the_fleet(tmp_path: Path) -> None:
    from ray.serve._private.build_app import build_app
    from ray.serve.schema import ServeDeploySchema

    from raygent.serve.builder import app_builder

    output = tmp_path / "serve_config.yaml"
    done = raygent("deploy", str(EXAMPLE), "--output", str(output), "--port", "8123")
    assert done.returncode == 0, done.stderr
    config = ServeDeploySchema.model_validate(yaml.safe_load(output.read_text()))
    assert config.http_options.port == 8123
    (app,) = config.applications
    assert app.name == "support-desk" and app.route_prefix == "/"
    assert app.import_path == "raygent.serve.builder:app_builder"
    assert app.args == {"fleet_file": str(EXAMPLE)}
    options = {d.name: d for d in app.deployments}
    assert set(options) == {"ingress", "router", "gateway", "agent-support", "agent-orders", "agent-refunds"}
    assert options["agent-support"].max_ongoing_requests == 64
    assert options["agent-support"].max_queued_requests == 256
    for name, deployment in options.items():
        resources = deployment.ray_actor_options.resources or {}
        assert ("agents" in resources) == (name != "ingress"), name
    # What `serve deploy` does with import_path and args: the builder makes the same deployments.
    built = build_app(app_builder(dict(app.args)), name=app.name)
    assert {d.name for d in built.deployments} == set(options)


def test_deploy_without_a_custom_resource(tmp_path: Path) -> None:
    output = tmp_path / "c.yaml"
    assert raygent("deploy", str(EXAMPLE), "-o", str(output), "--agents-resource", "").returncode == 0
    deployments = yaml.safe_load(output.read_text())["applications"][0]["deployments"]
    assert all("resources" not in d.get("ray_actor_options", {}) for d in deployments)


def test_deploy_reports_a_broken_fleet(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("name: x\n")
    done = raygent("deploy", str(bad), "-o", str(tmp_path / "c.yaml"))
    assert done.returncode == 2 and "problem(s)" in done.stderr


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["cluster", "up", "--yes"], [RAY, "up", str(REPO / "cluster.yaml"), "--yes"]),
        (["cluster", "down"], [RAY, "down", str(REPO / "cluster.yaml")]),
        (["cluster", "status"], [RAY, "exec", str(REPO / "cluster.yaml"), "ray status"]),
        (["cluster", "status", "--address", "10.0.0.1:6379"], [RAY, "status", "--address", "10.0.0.1:6379"]),
    ],
)
def test_cluster_commands_wrap_ray(args: list[str], command: list[str]) -> None:
    import shlex

    done = raygent(*args, "--dry-run")
    assert done.returncode == 0, done.stderr
    assert shlex.split(done.stdout) == command


def test_cluster_config_must_exist(tmp_path: Path) -> None:
    done = raygent("cluster", "up", "--config", str(tmp_path / "none.yaml"))
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_cluster_wrapper_reports_ray_failing(tmp_path: Path) -> None:
    broken = tmp_path / "cluster.yaml"
    broken.write_text("cluster_name: x\nprovider: {type: nowhere}\n")
    done = raygent("cluster", "up", "--yes", "--config", str(broken))
    assert done.returncode == 1 and "exited with status" in done.stderr
