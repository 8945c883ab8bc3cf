"""cluster.yaml is a valid Ray 2.60 cluster launcher config, checked by Ray's own schema and rules."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"


def ray_schema() -> dict[str, Any]:
    # find_spec locates the installed package without importing (and starting) anything of Ray.
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations, "ray is not installed"
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = ray_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture
def config() -> dict[str, Any]:
    data = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(data, dict)
    return data


def schema_errors(validator: jsonschema.Draft7Validator, data: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(data)]


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


# -------------------------------------------------------------------------------------- Ray's rules


def test_matches_rays_schema(validator: jsonschema.Draft7Validator, config: dict[str, Any]) -> None:
    assert schema_errors(validator, config) == []


def test_passes_rays_own_validation(config: dict[str, Any]) -> None:
    # What `ray up` runs: fill in the provider's defaults, then validate (schema plus cross-field rules).
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    validate_config(fillout_defaults(copy.deepcopy(config)))


@pytest.mark.parametrize(
    "breakage",
    [
        "unknown top-level key",
        "max_workers is a string",
        "negative max_workers",
        "fractional custom resource",
        "node type without node_config",
        "unknown key in a node type",
        "no provider",
        "command is not a string",
    ],
)
def test_broken_copies_fail(
    validator: jsonschema.Draft7Validator, config: dict[str, Any], breakage: str
) -> None:
    broken = copy.deepcopy(config)
    gpu = broken["available_node_types"]["gpu_vllm"]
    if breakage == "unknown top-level key":
        broken["max_worker"] = 3
    elif breakage == "max_workers is a string":
        broken["max_workers"] = "ten"
    elif breakage == "negative max_workers":
        broken["max_workers"] = -1
    elif breakage == "fractional custom resource":
        gpu["resources"]["vllm"] = 0.5
    elif breakage == "node type without node_config":
        del gpu["node_config"]
    elif breakage == "unknown key in a node type":
        gpu["min_worker"] = 1
    elif breakage == "no provider":
        del broken["provider"]
    elif breakage == "command is not a string":
        broken["setup_commands"].append({"pip": "install"})
    assert schema_errors(validator, broken), f"{breakage} was accepted"


def test_head_type_not_declared_fails_rays_validation(config: dict[str, Any]) -> None:
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    broken = copy.deepcopy(config)
    broken["head_node_type"] = "missing"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(fillout_defaults(broken))


# --------------------------------------------------------------------------------- raygent's needs


def test_cluster_identity(config: dict[str, Any]) -> None:
    assert config["cluster_name"] == "raygent"
    assert config["provider"]["type"] == "aws"
    assert config["provider"]["region"] == "us-west-2"
    assert config["head_node_type"] in config["available_node_types"]
    assert config["idle_timeout_minutes"] > 0


def test_gpu_worker_type_for_vllm(config: dict[str, Any]) -> None:
    gpu = [t for t in worker_types(config).values() if t["resources"].get("GPU", 0) >= 1]
    assert len(gpu) == 1, "exactly one GPU worker type is expected"
    (gpu_type,) = gpu
    assert gpu_type["resources"].get("vllm", 0) >= 1
    assert gpu_type.get("min_workers", 0) == 0, "idle GPUs cost money: scale from zero"
    assert gpu_type["node_config"]["InstanceType"].startswith(("g", "p"))


def test_cpu_worker_type_for_agents(config: dict[str, Any]) -> None:
    agents = [t for t in worker_types(config).values() if t["resources"].get("agents", 0) > 0]
    assert len(agents) == 1
    (agent_type,) = agents
    assert "GPU" not in agent_type["resources"]
    assert agent_type.get("min_workers", 0) == 0
    assert agent_type["max_workers"] >= 1


def test_head_runs_no_agents_or_models(config: dict[str, Any]) -> None:
    head = config["available_node_types"][config["head_node_type"]]
    assert not {"agents", "vllm", "GPU"} & set(head["resources"])


def test_worker_counts_are_consistent(config: dict[str, Any]) -> None:
    for name, node_type in worker_types(config).items():
        low, high = node_type.get("min_workers", 0), node_type.get("max_workers", 0)
        assert 0 <= low <= high, name
        # The cluster-wide cap must not stop any type from reaching its own maximum.
        assert high <= config["max_workers"], name


def test_setup_commands_install_raygent(config: dict[str, Any]) -> None:
    commands = " ; ".join(config["setup_commands"])
    assert "pip install" in commands
    assert "raygent" in commands
    assert "ray[default,serve]==2.60" in commands
    gpu = config["available_node_types"]["gpu_vllm"]
    assert any("[vllm]" in c for c in gpu["worker_setup_commands"])


def test_wheel_is_mounted_where_setup_looks(config: dict[str, Any]) -> None:
    mounts = config["file_mounts"]
    assert "~/raygent-dist" in mounts
    assert any("~/raygent-dist/raygent-" in c for c in config["setup_commands"])


def test_start_commands(config: dict[str, Any]) -> None:
    head, workers = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    assert head[0] == "ray stop"
    assert workers[0] == "ray stop"
    start = next(c for c in head if "ray start --head" in c)  # then Serve starts (test below)
    for flag in ("ray start --head", "--port=6379", "--autoscaling-config=~/ray_bootstrap_config.yaml"):
        assert flag in start
    assert "--dashboard-host=0.0.0.0" in start
    assert "--address=$RAY_HEAD_IP:6379" in workers[-1]


def test_worker_types_are_labelled_by_role(config: dict[str, Any]) -> None:
    roles = {
        name: t.get("labels", {}).get("raygent-role") for name, t in config["available_node_types"].items()
    }
    assert roles == {"head": "head", "cpu_agents": "agents", "gpu_vllm": "vllm"}


def test_head_starts_the_fleets_serve_application(config: dict[str, Any], tmp_path: Path) -> None:
    """After `ray start --head`, the head writes the fleet's Serve config with `raygent deploy` and
    applies it with `serve deploy`; that config is valid for Serve and asks only for resources that a
    worker type of this file provides (so the autoscaler can start nodes for it)."""
    import shlex

    from ray.serve.schema import ServeDeploySchema

    from raygent.cli.cluster import deploy

    commands = config["head_start_ray_commands"]
    start = next(i for i, c in enumerate(commands) if "ray start --head" in c)
    deploy_at = next(i for i, c in enumerate(commands) if c.startswith("raygent deploy "))
    apply_at = next(i for i, c in enumerate(commands) if c.startswith("serve deploy "))
    assert start < deploy_at < apply_at
    argv = shlex.split(commands[deploy_at])
    fleet_on_head, output = argv[2], argv[argv.index("--output") + 1]
    assert shlex.split(commands[apply_at])[2] == output

    # The fleet file is one the file mounts put on the head: map it back to this checkout and run the
    # same command here.
    mount = next(remote for remote in config["file_mounts"] if fleet_on_head.startswith(remote + "/"))
    local_fleet = CLUSTER_YAML.parent / config["file_mounts"][mount] / fleet_on_head[len(mount) + 1 :]
    assert local_fleet.is_file(), local_fleet
    written = tmp_path / "serve_config.yaml"
    deploy(
        file=local_fleet, output=written, state_dir=None, host="0.0.0.0", port=None, agents_resource="agents"
    )
    serve_config = ServeDeploySchema.model_validate(yaml.safe_load(written.read_text()))

    provided = {r for t in worker_types(config).values() for r in t["resources"]}
    head_resources = set(config["available_node_types"][config["head_node_type"]]["resources"])
    for app in serve_config.applications:
        for deployment in app.deployments:
            asked = set(
                (deployment.ray_actor_options.resources or {}) if deployment.ray_actor_options else {}
            )
            assert asked <= provided, deployment.name
            assert not asked & head_resources
    assert any(
        d.ray_actor_options and d.ray_actor_options.resources
        for d in serve_config.applications[0].deployments
    )
