"""The typed fleet models: strict keys, units and ranges, rule shapes, references, paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from raygent.core.config import (
    AgentSpec,
    AgentToolSpec,
    Fleet,
    OfflineModelSpec,
    OfflineRule,
    OpenAIModelSpec,
    PromptSpec,
    PythonToolSpec,
    ServerSpec,
    StoreSpec,
    TelemetrySpec,
    cross_check,
    parse_prompt_ref,
)

# Smallest valid input of every model: the starting point of each test's single change.
MINIMAL: dict[type[BaseModel], dict[str, Any]] = {
    OfflineRule: {"say": "hi"},
    OfflineModelSpec: {"kind": "offline"},
    OpenAIModelSpec: {"kind": "openai", "base_url": "http://localhost:8000/v1", "model": "m"},
    PythonToolSpec: {"kind": "python", "entrypoint": "tools.py:run"},
    AgentToolSpec: {"kind": "agent", "agent": "helper"},
    PromptSpec: {"versions": {"1": "You are $agent."}},
    AgentSpec: {"identity": "svc-a@acme", "prompt": "main@1"},
    StoreSpec: {},
    TelemetrySpec: {},
    ServerSpec: {},
}


def fleet_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "demo",
        "models": {"m": {"kind": "offline", "tier": "standard"}},
        "prompts": {"main": {"versions": {"1": "You are $agent."}}},
        "tools": {"t": {"kind": "python", "entrypoint": "tools.py:run"}},
        "agents": {"a": {"identity": "svc-a@acme", "prompt": "main@1", "tools": ["t"]}},
    }
    data.update(overrides)
    return data


def errors_of(cls: type[BaseModel], data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        cls.model_validate(data)
    return [dict(e) for e in caught.value.errors()]


def messages(cls: type[BaseModel], data: dict[str, Any]) -> str:
    return " | ".join(str(e["msg"]) for e in errors_of(cls, data))


# ------------------------------------------------------------------------------------- strict keys


@pytest.mark.parametrize("cls", list(MINIMAL), ids=lambda c: c.__name__)
def test_minimal_input_is_valid(cls: type[BaseModel]) -> None:
    cls.model_validate(MINIMAL[cls])


@pytest.mark.parametrize("cls", [*MINIMAL, Fleet], ids=lambda c: c.__name__)
def test_unknown_keys_are_rejected_everywhere(cls: type[BaseModel]) -> None:
    data = fleet_data() if cls is Fleet else dict(MINIMAL[cls])
    data["surprise"] = 1
    errs = errors_of(cls, data)
    assert [(e["type"], e["loc"]) for e in errs] == [("extra_forbidden", ("surprise",))]


def test_unknown_keys_are_rejected_in_nested_models() -> None:
    data = fleet_data()
    data["agents"]["a"]["max_step"] = 3
    errs = errors_of(Fleet, data)
    assert [(e["type"], e["loc"]) for e in errs] == [("extra_forbidden", ("agents", "a", "max_step"))]


@pytest.mark.parametrize("cls", list(MINIMAL), ids=lambda c: c.__name__)
def test_models_are_frozen(cls: type[BaseModel]) -> None:
    obj = cls.model_validate(MINIMAL[cls])
    field = next(iter(type(obj).model_fields))
    with pytest.raises(ValidationError):
        setattr(obj, field, getattr(obj, field))


# ----------------------------------------------------------------------------------- units, ranges


@pytest.mark.parametrize(
    ("cls", "field", "bad", "good"),
    [
        (OfflineModelSpec, "timeout_s", 0, 0.5),
        (OfflineModelSpec, "timeout_s", 3601, 3600),
        (OfflineModelSpec, "cost_per_1k_input_usd", -0.01, 0),
        (OfflineModelSpec, "cost_per_1k_output_usd", -1, 0.01),
        (OfflineModelSpec, "expected_latency_ms", -1, 0),
        (OfflineModelSpec, "latency_ms", 60_001, 60_000),
        (OfflineModelSpec, "stream_chunk_tokens", 0, 1),
        (OpenAIModelSpec, "temperature", 2.1, 2),
        (OpenAIModelSpec, "max_output_tokens", 0, 1),
        (OpenAIModelSpec, "timeout_s", -5, 5),
        (PythonToolSpec, "timeout_s", 0, 0.1),
        (AgentToolSpec, "timeout_s", 3601, 3600),
        (AgentSpec, "max_steps", 0, 1),
        (AgentSpec, "max_steps", 101, 100),
        (AgentSpec, "deadline_s", 0, 0.001),
        (AgentSpec, "max_delegation_depth", 11, 10),
        (AgentSpec, "max_delegation_depth", -1, 0),
        (AgentSpec, "replicas", 0, 1),
        (AgentSpec, "num_cpus", 0, 0.01),
        (AgentSpec, "max_ongoing_requests", 0, 1),
        (AgentSpec, "max_queued_requests", -1, 0),
        (AgentSpec, "max_input_chars", 0, 1),
        (StoreSpec, "busy_timeout_s", 0, 1),
        (TelemetrySpec, "sample_ratio", 1.5, 1),
        (TelemetrySpec, "sample_ratio", -0.1, 0),
        (ServerSpec, "port", 0, 1),
        (ServerSpec, "port", 65536, 65535),
        (ServerSpec, "max_body_bytes", 255, 256),
        (ServerSpec, "gateway_replicas", 0, 1),
        (ServerSpec, "num_cpus", 0, 0.1),
    ],
)
def test_ranges(cls: type[BaseModel], field: str, bad: float, good: float) -> None:
    errs = errors_of(cls, {**MINIMAL[cls], field: bad})
    assert [e["loc"] for e in errs] == [(field,)]
    assert getattr(cls.model_validate({**MINIMAL[cls], field: good}), field) == good


@pytest.mark.parametrize(
    ("cls", "field", "bad"),
    [
        (AgentSpec, "max_steps", "many"),
        (AgentSpec, "stateful", "perhaps"),
        (AgentSpec, "tools", "lookup_order"),
        (ServerSpec, "port", "http"),
        (TelemetrySpec, "exporter", "zipkin"),
        (StoreSpec, "kind", "mysql"),
        (OfflineModelSpec, "tier", "gold"),
    ],
)
def test_wrong_types_and_choices(cls: type[BaseModel], field: str, bad: Any) -> None:
    errs = errors_of(cls, {**MINIMAL[cls], field: bad})
    assert errs
    assert all(e["loc"][0] == field for e in errs)


def test_defaults_carry_their_units() -> None:
    agent = AgentSpec.model_validate(MINIMAL[AgentSpec])
    assert (agent.max_steps, agent.deadline_s, agent.stateful, agent.replicas) == (8, 30.0, False, 1)
    assert ServerSpec().port == 8000
    assert ServerSpec().max_body_bytes == 64 * 1024
    assert StoreSpec().path == "raygent.db"


# ---------------------------------------------------------------------------------- offline rules


def test_rule_needs_call_or_say() -> None:
    assert "exactly one of 'call' or 'say'" in messages(OfflineRule, {"match": "x"})


def test_rule_cannot_have_both_call_and_say() -> None:
    assert "exactly one of 'call' or 'say'" in messages(OfflineRule, {"call": "t", "say": "hi"})


def test_args_only_with_call() -> None:
    assert "'args' only makes sense with 'call'" in messages(OfflineRule, {"say": "hi", "args": {"a": 1}})
    rule = OfflineRule(call="lookup", args={"order_id": "{order_id}"}, match=r"(?P<order_id>\d+)")
    assert rule.args == {"order_id": "{order_id}"}


def test_rule_regex_must_compile() -> None:
    errs = errors_of(OfflineRule, {"match": "(unclosed", "say": "x"})
    assert [e["loc"] for e in errs] == [("match",)]
    assert "not a valid regular expression" in str(errs[0]["msg"])
    assert OfflineRule(match=r"(?i)\border\s*#?(?P<id>\d+)", say="ok").match is not None


def test_rule_without_match_applies_to_anything() -> None:
    rule = OfflineRule(after_tool="lookup", say="{result.answer}")
    assert rule.match is None
    assert rule.args == {}


# ------------------------------------------------------------------------------- prompt references


@pytest.mark.parametrize(
    ("ref", "parts"),
    [
        ("support@2", ("support", "2")),
        ("orders@1.0", ("orders", "1.0")),
        ("multi-word_id@v2-rc.1", ("multi-word_id", "v2-rc.1")),
    ],
)
def test_parse_prompt_ref(ref: str, parts: tuple[str, str]) -> None:
    assert parse_prompt_ref(ref) == parts


@pytest.mark.parametrize("ref", ["support", "@1", "support@", "Support@1", "a@b@c", "a b@1", "1abc@1", ""])
def test_parse_prompt_ref_rejects(ref: str) -> None:
    with pytest.raises(ValueError, match="must look like 'name@version'"):
        parse_prompt_ref(ref)


def test_agent_prompt_must_be_a_reference() -> None:
    errs = errors_of(AgentSpec, {**MINIMAL[AgentSpec], "prompt": "main"})
    assert [e["loc"] for e in errs] == [("prompt",)]
    assert "name@version" in str(errs[0]["msg"])


@pytest.mark.parametrize("identity", ["", "has space", "x" * 129, "semi;colon"])
def test_agent_identity_pattern(identity: str) -> None:
    errs = errors_of(AgentSpec, {**MINIMAL[AgentSpec], "identity": identity})
    assert [e["loc"] for e in errs] == [("identity",)]


def test_prompt_needs_a_version() -> None:
    errs = errors_of(PromptSpec, {"versions": {}})
    assert [e["loc"] for e in errs] == [("versions",)]


# ---------------------------------------------------------------------------------- openai backend


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("https://api.example.com/v1/", "https://api.example.com/v1"),
        ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
    ],
)
def test_openai_base_url_accepted(url: str, stored: str) -> None:
    spec = OpenAIModelSpec.model_validate({**MINIMAL[OpenAIModelSpec], "base_url": url})
    assert spec.base_url == stored


@pytest.mark.parametrize(
    "url", ["localhost:8000", "ftp://host/v1", "http://", "https:// space", "", "//host"]
)
def test_openai_base_url_rejected(url: str) -> None:
    errs = errors_of(OpenAIModelSpec, {**MINIMAL[OpenAIModelSpec], "base_url": url})
    assert [e["loc"] for e in errs] == [("base_url",)]
    assert "http:// or https:// URL" in str(errs[0]["msg"])


def test_openai_needs_base_url_and_model() -> None:
    errs = errors_of(OpenAIModelSpec, {"kind": "openai"})
    assert sorted((e["type"], e["loc"]) for e in errs) == [
        ("missing", ("base_url",)),
        ("missing", ("model",)),
    ]


# --------------------------------------------------------------------------------------------- tools


@pytest.mark.parametrize("cls", [PythonToolSpec, AgentToolSpec], ids=lambda c: c.__name__)
@pytest.mark.parametrize("schema", [{}, {"type": "string"}, {"type": "array", "items": {}}])
def test_tool_parameters_must_be_an_object_schema(cls: type[BaseModel], schema: dict[str, Any]) -> None:
    errs = errors_of(cls, {**MINIMAL[cls], "parameters": schema})
    assert [e["loc"] for e in errs] == [("parameters",)]
    assert "type: object" in str(errs[0]["msg"])


def test_tool_parameter_defaults() -> None:
    python_tool = PythonToolSpec.model_validate(MINIMAL[PythonToolSpec])
    assert python_tool.parameters == {"type": "object", "properties": {}}
    assert (python_tool.side_effect, python_tool.idempotent, python_tool.scopes) == (False, True, [])
    delegate = AgentToolSpec.model_validate(MINIMAL[AgentToolSpec])
    assert delegate.parameters["required"] == ["input"]
    assert delegate.parameters["properties"]["input"] == {"type": "string"}


@pytest.mark.parametrize("entrypoint", ["tools.py:lookup", "pkg.module:fn", "sub/dir/t.py:_private"])
def test_python_entrypoint_accepted(entrypoint: str) -> None:
    assert PythonToolSpec(kind="python", entrypoint=entrypoint).entrypoint == entrypoint


@pytest.mark.parametrize("entrypoint", ["tools.py", "tools.py:1fn", ":fn", "tools.py:fn()", "a b.py:fn"])
def test_python_entrypoint_rejected(entrypoint: str) -> None:
    errs = errors_of(PythonToolSpec, {"kind": "python", "entrypoint": entrypoint})
    assert [e["loc"] for e in errs] == [("entrypoint",)]


def test_tool_kind_selects_the_model() -> None:
    fleet = Fleet.model_validate(
        fleet_data(tools={"t": {"kind": "python", "entrypoint": "x:y"}, "d": {"kind": "agent", "agent": "a"}})
    )
    assert isinstance(fleet.tools["t"], PythonToolSpec)
    assert isinstance(fleet.tools["d"], AgentToolSpec)
    errs = errors_of(Fleet, fleet_data(tools={"t": {"kind": "shell"}}))
    assert [e["type"] for e in errs] == ["union_tag_invalid"]


def test_model_kind_selects_the_model() -> None:
    fleet = Fleet.model_validate(fleet_data(models={"o": MINIMAL[OpenAIModelSpec] | {"tier": "standard"}}))
    assert isinstance(fleet.models["o"], OpenAIModelSpec)
    errs = errors_of(Fleet, fleet_data(models={"o": {"tier": "standard"}}))
    assert [e["type"] for e in errs] == ["union_tag_not_found"]


# --------------------------------------------------------------------------------------------- fleet


@pytest.mark.parametrize("section", ["models", "agents"])
def test_fleet_needs_models_and_agents(section: str) -> None:
    errs = errors_of(Fleet, fleet_data(**{section: {}}))
    assert [e["loc"] for e in errs] == [(section,)]
    data = fleet_data()
    del data[section]
    assert [(e["type"], e["loc"]) for e in errors_of(Fleet, data)] == [("missing", (section,))]


@pytest.mark.parametrize("name", ["Demo", "1demo", "has space", "a" * 64, ""])
def test_names_are_lowercase_identifiers(name: str) -> None:
    assert errors_of(Fleet, fleet_data(name=name))
    errs = errors_of(Fleet, fleet_data(agents={name: {"identity": "x", "prompt": "main@1"}}))
    assert errs and all(e["loc"][0] == "agents" for e in errs)


def test_fleet_version_is_one() -> None:
    assert Fleet.model_validate(fleet_data(version=1)).version == 1
    assert [e["loc"] for e in errors_of(Fleet, fleet_data(version=2))] == [("version",)]


def test_loader_fields_are_not_dumped() -> None:
    fleet = Fleet.model_validate(fleet_data(base_dir="/srv/fleet", state_dir="/var/lib/raygent"))
    dumped = fleet.model_dump()
    assert "base_dir" not in dumped
    assert "state_dir" not in dumped
    assert dumped["name"] == "demo"


def test_resolve_path_is_relative_to_the_fleet_file(tmp_path: Path) -> None:
    fleet = Fleet.model_validate(fleet_data(base_dir=str(tmp_path)))
    assert fleet.resolve_path("tools.py") == tmp_path / "tools.py"
    assert fleet.resolve_path("sub/data.json") == tmp_path / "sub" / "data.json"
    assert fleet.resolve_path("/etc/x.json") == Path("/etc/x.json")


def test_state_path_defaults_beside_the_fleet_file(tmp_path: Path) -> None:
    fleet = Fleet.model_validate(fleet_data(base_dir=str(tmp_path)))
    assert fleet.state_path("raygent.db") == tmp_path / ".raygent" / "raygent.db"
    assert fleet.state_path("/abs/spans.jsonl") == Path("/abs/spans.jsonl")


def test_state_path_uses_the_state_dir_when_set(tmp_path: Path) -> None:
    fleet = Fleet.model_validate(fleet_data(base_dir=str(tmp_path), state_dir=str(tmp_path / "state")))
    assert fleet.state_path("raygent.db") == tmp_path / "state" / "raygent.db"
    # Code stays relative to the fleet file.
    assert fleet.resolve_path("tools.py") == tmp_path / "tools.py"


def test_prompt_text() -> None:
    fleet = Fleet.model_validate(fleet_data())
    assert fleet.prompt_text("main@1") == "You are $agent."


# --------------------------------------------------------------------------------------- cross check


def test_cross_check_clean_fleet() -> None:
    assert cross_check(Fleet.model_validate(fleet_data())) == []


def test_cross_check_reports_every_dangling_reference() -> None:
    data = fleet_data(
        prompts={"main": {"versions": {"1": "x", "2": "y"}}},
        tools={
            "t": {"kind": "python", "entrypoint": "tools.py:run"},
            "ask": {"kind": "agent", "agent": "ghost"},
        },
        models={
            "m": {
                "kind": "offline",
                "rules": [{"call": "nope", "say": None}, {"after_tool": "gone", "say": "x"}],
            }
        },
        agents={
            "a": {"identity": "a", "prompt": "missing@1", "tools": ["t", "zzz"]},
            "b": {"identity": "b", "prompt": "main@3", "tier": "premium"},
        },
    )
    found = {(i.loc, i.message) for i in cross_check(Fleet.model_validate(data))}
    assert found == {
        (("agents", "a", "prompt"), "unknown prompt 'missing'"),
        (("agents", "a", "tools", 1), "unknown tool 'zzz'"),
        (("agents", "b", "prompt"), "prompt 'main' has no version '3' (known: 1, 2)"),
        (("agents", "b", "tier"), "no model has tier 'premium'; the agent would have nothing to run on"),
        (("tools", "ask", "agent"), "unknown agent 'ghost'"),
        (("models", "m", "rules", 0, "call"), "unknown tool 'nope'"),
        (("models", "m", "rules", 1, "after_tool"), "unknown tool 'gone'"),
    }


@pytest.mark.parametrize("field", ["governance_dsn", "audit_dsn"])
@pytest.mark.parametrize("dsn", ["postgresql://raygent@db:5432/raygent", "postgres://u:p@10.0.0.5/gov"])
def test_postgres_dsns_accepted(field: str, dsn: str) -> None:
    assert getattr(StoreSpec.model_validate({field: dsn}), field) == dsn


@pytest.mark.parametrize("field", ["governance_dsn", "audit_dsn"])
@pytest.mark.parametrize("dsn", ["mysql://db/raygent", "host=db dbname=raygent", "db:5432", ""])
def test_postgres_dsns_rejected(field: str, dsn: str) -> None:
    errs = errors_of(StoreSpec, {field: dsn})
    assert [e["loc"] for e in errs] == [(field,)]
    assert f"{field} must be a postgresql:// or postgres://" in str(errs[0]["msg"])
