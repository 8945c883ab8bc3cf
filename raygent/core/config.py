"""The fleet file: typed configuration of models, prompts, agents, tools, stores and serving.

Every model is ``extra="forbid"`` so a typo is an error, not a silently ignored key. Units live in
field names (``timeout_s``, ``latency_ms``, ``max_body_bytes``). Cross references (an agent's prompt, its
tools, a delegation target) are checked by :func:`cross_check`, which returns located issues instead of
raising, so ``raygent check`` can report all of them at once.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "AgentSpec",
    "AgentToolSpec",
    "ConfigIssue",
    "Fleet",
    "ModelSpec",
    "OfflineModelSpec",
    "OfflineRule",
    "OpenAIModelSpec",
    "PromptSpec",
    "PythonToolSpec",
    "ServerSpec",
    "StoreSpec",
    "TelemetrySpec",
    "ToolSpecConfig",
    "cross_check",
    "parse_prompt_ref",
]

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
Name = Annotated[str, Field(pattern=_NAME)]
Tier = Literal["premium", "standard", "cheap"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- models


class OfflineRule(Strict):
    """One rule of the offline model's script; the first rule that applies answers.

    A rule applies when the last message is a user message (``after_tool`` unset) or the result of the
    tool named by ``after_tool``, its text matches ``match`` (a regex, searched), and, for ``call``, the
    tool is among the tools offered to the model. Templates in ``say`` and ``args`` use
    ``str.format`` fields: named regex groups, ``{user}`` (last user text) and ``{result.FIELD}``
    (fields of the JSON tool result).
    """

    match: str | None = None
    after_tool: str | None = None
    call: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    say: str | None = None
    reasoning: str | None = Field(default=None, description="Text emitted beside a tool call.")

    @field_validator("match")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_action(self) -> OfflineRule:
        if (self.call is None) == (self.say is None):
            raise ValueError("a rule needs exactly one of 'call' or 'say'")
        if self.args and self.call is None:
            raise ValueError("'args' only makes sense with 'call'")
        return self


class _ModelBase(Strict):
    tier: Tier = "standard"
    cost_per_1k_input_usd: float = Field(default=0.0, ge=0)
    cost_per_1k_output_usd: float = Field(default=0.0, ge=0)
    expected_latency_ms: float = Field(default=100.0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)


class OfflineModelSpec(_ModelBase):
    """Deterministic, scripted, offline model: no network, realistic token counts."""

    kind: Literal["offline"]
    rules: list[OfflineRule] = Field(default_factory=list)
    fallback_say: str = "I'm sorry, I can't help with that request."
    latency_ms: float = Field(default=0.0, ge=0, le=60_000, description="Simulated latency per call.")
    stream_chunk_tokens: int = Field(default=4, ge=1)


class OpenAIModelSpec(_ModelBase):
    """Any OpenAI-compatible chat completions server (hosted APIs, vLLM, …)."""

    kind: Literal["openai"]
    base_url: str
    model: str
    api_key_env: str | None = Field(default=None, description="Environment variable holding the key.")
    max_output_tokens: int = Field(default=1024, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("base_url must be an http:// or https:// URL")
        return value.rstrip("/")


ModelSpec = Annotated[OfflineModelSpec | OpenAIModelSpec, Field(discriminator="kind")]

# ----------------------------------------------------------------------------------------------- tools


class _ToolBase(Strict):
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="JSON schema of the arguments.",
    )
    side_effect: bool = False
    idempotent: bool = True
    scopes: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=10.0, gt=0, le=3600)

    @field_validator("parameters")
    @classmethod
    def _object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("parameters must be a JSON schema with type: object")
        return value


class PythonToolSpec(_ToolBase):
    """A Python function ``file.py:function`` (path relative to the fleet file) or ``module:function``."""

    kind: Literal["python"]
    entrypoint: str = Field(pattern=r"^[\w./-]+:[A-Za-z_]\w*$")


class AgentToolSpec(_ToolBase):
    """Delegation: calling this tool runs another agent, under that agent's own identity."""

    kind: Literal["agent"]
    agent: Name
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {
            "type": "object",
            "properties": {"input": {"type": "string"}},
            "required": ["input"],
        }
    )


ToolSpecConfig = Annotated[PythonToolSpec | AgentToolSpec, Field(discriminator="kind")]

# ---------------------------------------------------------------------------------------------- agents


class PromptSpec(Strict):
    """Versioned prompt templates; ``$name`` placeholders are filled from the agent (``$agent``)."""

    versions: dict[str, str] = Field(min_length=1)


class AgentSpec(Strict):
    description: str = ""
    identity: str = Field(pattern=r"^[\w.:@-]{1,128}$", description="The agent's own service identity.")
    prompt: str = Field(description="prompt_id@version")
    tier: Tier = "standard"
    tools: list[str] = Field(default_factory=list)
    stateful: bool = False
    max_steps: int = Field(default=8, ge=1, le=100)
    deadline_s: float = Field(default=30.0, gt=0, le=86_400)
    max_delegation_depth: int = Field(default=3, ge=0, le=10)
    max_ongoing_requests: int = Field(default=64, ge=1, le=10_000)
    max_queued_requests: int = Field(default=256, ge=0, le=100_000)
    replicas: int = Field(default=1, ge=1, le=1000)
    num_cpus: float = Field(default=0.1, gt=0, le=64)
    max_input_chars: int = Field(default=16_000, ge=1)
    max_history_messages: int = Field(
        default=40, ge=0, le=10_000, description="Session context kept between runs (older turns drop)."
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_ref(cls, value: str) -> str:
        parse_prompt_ref(value)
        return value


def parse_prompt_ref(ref: str) -> tuple[str, str]:
    """Split ``id@version``; raises ValueError with a plain sentence otherwise."""
    match = re.fullmatch(r"([a-z][a-z0-9_-]*)@([\w.-]+)", ref)
    if not match:
        raise ValueError(f"prompt reference {ref!r} must look like 'name@version'")
    return match.group(1), match.group(2)


# --------------------------------------------------------------------------------------- infrastructure


class StoreSpec(Strict):
    kind: Literal["sqlite"] = "sqlite"
    path: str = Field(default="raygent.db", description="SQLite file, relative to the state directory.")
    busy_timeout_s: float = Field(default=10.0, gt=0)


class TelemetrySpec(Strict):
    exporter: Literal["none", "console", "jsonl"] = "none"
    jsonl_path: str = Field(default="spans.jsonl", description="Relative to the state directory.")
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    service_name: str = "raygent"


class ServerSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    max_ongoing_requests: int = Field(default=256, ge=1)
    max_queued_requests: int = Field(default=1024, ge=0)
    num_cpus: float = Field(default=0.1, gt=0, le=64)
    router_num_cpus: float = Field(default=0.1, gt=0, le=64)
    gateway_num_cpus: float = Field(default=0.1, gt=0, le=64)
    gateway_replicas: int = Field(default=1, ge=1, le=1000)


class Fleet(Strict):
    """A whole fleet file."""

    name: Name
    version: Literal[1] = 1
    server: ServerSpec = Field(default_factory=ServerSpec)
    store: StoreSpec = Field(default_factory=StoreSpec)
    telemetry: TelemetrySpec = Field(default_factory=TelemetrySpec)
    models: dict[Name, ModelSpec] = Field(min_length=1)
    prompts: dict[Name, PromptSpec] = Field(default_factory=dict)
    tools: dict[Name, ToolSpecConfig] = Field(default_factory=dict)
    agents: dict[Name, AgentSpec] = Field(min_length=1)
    # Set by the loader, not by the file: code paths are relative to the fleet file (base_dir), state
    # files (store, spans, the example's ledger) to the state directory (default: base_dir/.raygent).
    base_dir: str = Field(default=".", exclude=True)
    state_dir: str = Field(default="", exclude=True)

    def resolve_path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else Path(self.base_dir) / path

    def state_path(self, relative: str) -> Path:
        path = Path(relative)
        root = Path(self.state_dir) if self.state_dir else Path(self.base_dir) / ".raygent"
        return path if path.is_absolute() else root / path

    def prompt_text(self, ref: str) -> str:
        prompt_id, version = parse_prompt_ref(ref)
        return self.prompts[prompt_id].versions[version]


class ConfigIssue(BaseModel):
    """One problem in a fleet file, located by its path of keys."""

    loc: tuple[str | int, ...]
    message: str


def _agent_issues(fleet: Fleet, name: str, agent: AgentSpec) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    here = ("agents", name)
    prompt_id, version = parse_prompt_ref(agent.prompt)
    if prompt_id not in fleet.prompts:
        issues.append(ConfigIssue(loc=(*here, "prompt"), message=f"unknown prompt {prompt_id!r}"))
    elif version not in fleet.prompts[prompt_id].versions:
        known = ", ".join(sorted(fleet.prompts[prompt_id].versions))
        message = f"prompt {prompt_id!r} has no version {version!r} (known: {known})"
        issues.append(ConfigIssue(loc=(*here, "prompt"), message=message))
    if not any(m.tier == agent.tier for m in fleet.models.values()):
        message = f"no model has tier {agent.tier!r}; the agent would have nothing to run on"
        issues.append(ConfigIssue(loc=(*here, "tier"), message=message))
    for index, tool_name in enumerate(agent.tools):
        if tool_name not in fleet.tools:
            issues.append(ConfigIssue(loc=(*here, "tools", index), message=f"unknown tool {tool_name!r}"))
    return issues


def cross_check(fleet: Fleet) -> list[ConfigIssue]:
    """Reference checks a field validator cannot do: every name used must be defined."""
    issues: list[ConfigIssue] = []
    for agent_name, agent in fleet.agents.items():
        issues.extend(_agent_issues(fleet, agent_name, agent))
    for tool_name, tool in fleet.tools.items():
        if isinstance(tool, AgentToolSpec) and tool.agent not in fleet.agents:
            issues.append(
                ConfigIssue(loc=("tools", tool_name, "agent"), message=f"unknown agent {tool.agent!r}")
            )
    for model_name, model in fleet.models.items():
        if not isinstance(model, OfflineModelSpec):
            continue
        for index, rule in enumerate(model.rules):
            for field, ref in (("call", rule.call), ("after_tool", rule.after_tool)):
                if ref is not None and ref not in fleet.tools:
                    loc = ("models", model_name, "rules", index, field)
                    issues.append(ConfigIssue(loc=loc, message=f"unknown tool {ref!r}"))
    return issues
