"""The ``soap`` tool kind: one operation of a SOAP service, built from its WSDL with zeep.

The WSDL is loaded on the first call (a service that is down fails that call, not the gateway) and kept
for the replica's life. zeep is synchronous, so a call runs on a worker thread bounded by the tool's
timeout. A SOAP fault becomes a :class:`SoapFaultError` with the fault code; an HTTP or connection failure
a :class:`TransportError`; arguments the operation does not accept a clear tool error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

from raygent.core.config import SoapToolSpec
from raygent.core.errors import ToolError
from raygent.integrations.context import ToolContext
from raygent.integrations.errors import SoapFaultError, ToolLoadError, ToolTimeoutError, TransportError
from raygent.integrations.python_tool import json_result

__all__ = ["SoapToolExecutor", "to_json"]


def to_json(value: Any) -> Any:
    """zeep's serialised objects → JSON types (Decimal → float, dates → ISO 8601, bytes → text)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


class SoapToolExecutor:
    """One ``soap`` tool in one gateway replica.

    Args:
        name: The tool's name.
        spec: WSDL, operation, optional service/port and endpoint override.
        base_dir: Where a relative WSDL path is resolved.
    """

    def __init__(self, name: str, spec: SoapToolSpec, *, base_dir: Path) -> None:
        self._name = name
        self._spec = spec
        self._base_dir = base_dir
        self._service: Any = None
        self._client: Any = None
        self._lock = threading.Lock()

    def _wsdl_location(self) -> str:
        wsdl = self._spec.wsdl
        if wsdl.startswith(("http://", "https://", "file://")):
            return wsdl
        path = Path(wsdl)
        return str(path if path.is_absolute() else self._base_dir / path)

    def _load(self, timeout_s: float) -> Any:
        with self._lock:
            if self._service is not None:
                return self._service
            import requests
            import zeep
            from zeep.transports import Transport

            spec = self._spec
            try:
                transport = Transport(timeout=timeout_s, operation_timeout=timeout_s)
                client = zeep.Client(self._wsdl_location(), transport=transport)
                if spec.service or spec.port:
                    service = client.bind(spec.service, spec.port)
                else:
                    service = client.service
                if spec.endpoint:
                    binding = service._binding.name.text  # zeep keeps the binding's QName here
                    service = client.create_service(binding, spec.endpoint)
            except (requests.RequestException, OSError) as exc:
                raise ToolLoadError(f"cannot load the WSDL {spec.wsdl!r}: {exc}") from None
            except Exception as exc:  # zeep raises many kinds for a bad WSDL; all mean the same here
                raise ToolLoadError(
                    f"the WSDL {spec.wsdl!r} is not usable: {type(exc).__name__}: {exc}"
                ) from None
            try:
                service[spec.operation]
            except (AttributeError, KeyError, ValueError):
                raise ToolLoadError(f"the WSDL {spec.wsdl!r} has no operation {spec.operation!r}") from None
            self._client, self._service = client, service
            return service

    def input_names(self, *, timeout_s: float = 10.0) -> list[str]:
        """Names of the operation's input parts (for checking the tool's JSON schema against the WSDL)."""
        service = self._load(timeout_s)
        operation = service._binding._operations[self._spec.operation]
        return [name for name, _ in operation.input.body.type.elements]

    def _invoke(self, arguments: dict[str, Any], timeout_s: float) -> Any:
        import requests
        from zeep.exceptions import Fault, ValidationError
        from zeep.exceptions import TransportError as ZeepTransportError
        from zeep.helpers import serialize_object

        service = self._load(timeout_s)
        operation = self._spec.operation
        try:
            result = service[operation](**arguments)
        except Fault as exc:
            code = str(exc.code or "").rpartition("}")[2].rpartition(":")[2] or "Fault"
            raise SoapFaultError(
                f"{operation} failed: {exc.message} ({code})", extra={"fault_code": code}
            ) from None
        except ZeepTransportError as exc:
            raise TransportError(f"{operation}: the SOAP endpoint answered HTTP {exc.status_code}") from None
        except requests.Timeout:
            raise ToolTimeoutError(f"{operation}: no answer within {timeout_s:g} s") from None
        except requests.RequestException as exc:
            raise TransportError(
                f"{operation}: cannot reach the SOAP endpoint: {type(exc).__name__}"
            ) from None
        except (TypeError, ValidationError) as exc:
            raise ToolError(f"arguments do not fit operation {operation!r} of the WSDL: {exc}") from None
        return to_json(serialize_object(result, target_cls=dict))

    async def call(self, ctx: ToolContext, arguments: dict[str, Any], *, timeout_s: float) -> Any:
        try:
            result = await asyncio.wait_for(asyncio.to_thread(self._invoke, arguments, timeout_s), timeout_s)
        except TimeoutError:
            raise ToolTimeoutError(f"{self._spec.operation}: no answer within {timeout_s:g} s") from None
        if not isinstance(result, dict):
            result = {"result": result}
        return json_result(result)

    async def aclose(self) -> None:
        client = self._client
        if client is not None:
            await asyncio.to_thread(client.transport.session.close)
