"""The ``python`` tool kind: a function ``file.py:name`` (relative to the fleet file) or ``module:name``.

Sync functions run on a worker thread so a blocking tool (a database call) does not stall the gateway's
event loop; the timeout bounds how long the caller waits.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raygent.integrations.context import ToolContext
from raygent.integrations.errors import ToolLoadError, ToolResultError, ToolTimeoutError

__all__ = ["MAX_RESULT_BYTES", "PythonToolLoader", "json_result", "run_python_tool"]

MAX_RESULT_BYTES = 256 * 1024


class PythonToolLoader:
    """Resolves entrypoints once per loader (one per gateway replica, never module-global)."""

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir
        self._cache: dict[str, Callable[..., Any]] = {}

    def load(self, entrypoint: str) -> Callable[..., Any]:
        fn = self._cache.get(entrypoint)
        if fn is None:
            fn = self._resolve(entrypoint)
            self._cache[entrypoint] = fn
        return fn

    def _resolve(self, entrypoint: str) -> Callable[..., Any]:
        target, _, attr = entrypoint.rpartition(":")
        try:
            if target.endswith(".py") or "/" in target:
                path = (self._base_dir / target).resolve()
                # A stable, unique module name per file so two fleets' tools.py never collide.
                name = "raygent_tool_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
                module = sys.modules.get(name)
                if module is None:
                    spec = importlib.util.spec_from_file_location(name, path)
                    if spec is None or spec.loader is None:
                        raise ToolLoadError(f"cannot load tool module {target!r}")
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    try:
                        spec.loader.exec_module(module)
                    except BaseException:
                        sys.modules.pop(name, None)
                        raise
            else:
                module = importlib.import_module(target)
        except ToolLoadError:
            raise
        except FileNotFoundError:
            raise ToolLoadError(f"tool module {target!r} does not exist") from None
        except Exception as exc:
            raise ToolLoadError(
                f"tool module {target!r} failed to import: {type(exc).__name__}: {exc}"
            ) from None
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise ToolLoadError(f"tool module {target!r} has no function {attr!r}")
        return fn


def json_result(value: Any) -> Any:
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ToolResultError(f"tool returned a value that is not JSON: {exc}") from None
    if len(text.encode()) > MAX_RESULT_BYTES:
        raise ToolResultError(f"tool result is larger than {MAX_RESULT_BYTES} bytes")
    return json.loads(text)


async def run_python_tool(
    fn: Callable[..., Any], ctx: ToolContext, arguments: dict[str, Any], *, timeout_s: float
) -> Any:
    """Call ``fn(ctx, **arguments)`` within ``timeout_s``; returns a JSON-safe copy of its result."""
    try:
        if inspect.iscoroutinefunction(fn):
            result = await asyncio.wait_for(fn(ctx, **arguments), timeout_s)
        else:
            result = await asyncio.wait_for(asyncio.to_thread(fn, ctx, **arguments), timeout_s)
    except TimeoutError:
        raise ToolTimeoutError(f"tool did not answer within {timeout_s:g} s") from None
    return json_result(result)
