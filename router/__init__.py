"""Model backends behind one :class:`Model` protocol, and the router that picks one per call.

Not re-exported, to keep this import light: ``raygent.router.actor`` (pulls in governance and
telemetry) and ``raygent.router.openai_server.build_openai_app`` (pulls in FastAPI).
"""

from __future__ import annotations

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
from raygent.router.router import Router, RouteSpec, build_model, models_from_fleet
from raygent.router.tokens import count_request_tokens, count_tokens

__all__ = [
    "FinishReason",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "ModelResponseError",
    "ModelTimeoutError",
    "ModelUnavailableError",
    "NoBackendError",
    "OfflineModel",
    "OpenAICompatModel",
    "RouteSpec",
    "Router",
    "StreamDelta",
    "StreamDone",
    "StreamEvent",
    "build_model",
    "count_request_tokens",
    "count_tokens",
    "models_from_fleet",
]
