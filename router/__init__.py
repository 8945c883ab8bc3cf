"""Model backends behind one :class:`Model` protocol, and the router that picks one per call.

Not re-exported, to keep this import light: ``raygent.router.actor`` (pulls in governance and
telemetry), ``raygent.router.openai_server.build_openai_app`` (pulls in FastAPI) and
``raygent.router.vllm_engine`` (the vLLM backend and its Serve deployment).
"""

from __future__ import annotations

from raygent.router.breaker import CircuitBreaker
from raygent.router.budget import BudgetModelInterceptor
from raygent.router.costreport import CostReport, build_cost_report
from raygent.router.errors import ModelResponseError, ModelTimeoutError, ModelUnavailableError, NoBackendError
from raygent.router.model import (
    FinishReason,
    Model,
    ModelRequest,
    ModelResponse,
    StreamDelta,
    StreamDone,
    StreamEvent,
)
from raygent.router.offline import OfflineModel
from raygent.router.openai_compat import OpenAICompatModel
from raygent.router.retry import RetryBudget
from raygent.router.router import Router, RouteSpec, build_model, models_from_fleet
from raygent.router.stats import BackendStats, StatsSnapshot
from raygent.router.strategies import (
    Candidate,
    CostStrategy,
    Decision,
    FixedStrategy,
    LatencyBudgetStrategy,
    RouteRequest,
    Strategy,
    TierStrategy,
)
from raygent.router.tokens import count_request_tokens, count_tokens

__all__ = [
    "BackendStats",
    "BudgetModelInterceptor",
    "Candidate",
    "CircuitBreaker",
    "CostReport",
    "CostStrategy",
    "Decision",
    "FinishReason",
    "FixedStrategy",
    "LatencyBudgetStrategy",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseError",
    "ModelTimeoutError",
    "ModelUnavailableError",
    "NoBackendError",
    "OfflineModel",
    "OpenAICompatModel",
    "RetryBudget",
    "RouteRequest",
    "RouteSpec",
    "Router",
    "StatsSnapshot",
    "Strategy",
    "StreamDelta",
    "StreamDone",
    "StreamEvent",
    "TierStrategy",
    "build_cost_report",
    "build_model",
    "count_request_tokens",
    "count_tokens",
    "models_from_fleet",
]
