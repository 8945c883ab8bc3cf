"""Errors of the tool kinds.

Every one is a :class:`~raygent.core.errors.ToolError`, so the gateway turns it into an error *result*
(``{"error", "error_type"}``) that the model can explain to the user; the slug says what kind of failure it
was, the detail says what to do about it.

    ToolError
    ├── ToolLoadError           the tool could not be built (bad entrypoint, WSDL that does not load)
    ├── ToolTimeoutError        no answer in time (retryable)
    ├── ToolResultError         the tool answered something raygent cannot pass on
    ├── ToolPendingError        an asynchronous call is still waiting for its reply (retryable)
    ├── RecordError             a fixed-width record does not match its layout
    │   └── LayoutError         the layout (copybook) itself is invalid
    ├── TransportError          the message broker failed (retryable)
    ├── RemoteToolError         the backend answered with an error (an error reply, a dead-lettered request)
    ├── SoapFaultError          the SOAP service answered with a fault
    ├── TerminalError           a green-screen session did not reach the expected screen
    ├── HttpRequestError        the arguments do not make a valid HTTP request (http kind)
    ├── HttpStatusError         the HTTP API answered an error status (retryable for 429 and 5xx)
    └── CredentialError         no usable credential: the gateway sends nothing without one
        ├── TokenEndpointError      the OAuth2 token endpoint failed or refused the client
        ├── InsufficientScopeError  the token granted lacks a scope the tool needs
        ├── CredentialRevokedError  the agent identity was revoked (fail closed)
        └── SecretUnavailableError  a secret could not be read (missing, denied, provider down)
"""

from __future__ import annotations

from raygent.core.errors import ToolError

__all__ = [
    "CredentialError",
    "CredentialRevokedError",
    "HttpRequestError",
    "HttpStatusError",
    "InsufficientScopeError",
    "LayoutError",
    "RecordError",
    "RemoteToolError",
    "SecretUnavailableError",
    "SoapFaultError",
    "TerminalError",
    "TokenEndpointError",
    "ToolLoadError",
    "ToolPendingError",
    "ToolResultError",
    "ToolTimeoutError",
    "TransportError",
]


class ToolLoadError(ToolError):
    """The tool's code could not be loaded (bad entrypoint, import error, WSDL that does not load)."""

    slug = "tool-load-failed"
    title = "Tool could not be loaded"


class ToolTimeoutError(ToolError):
    slug = "tool-timeout"
    title = "Tool timed out"
    default_retryable = True


class ToolResultError(ToolError):
    """The tool returned something raygent cannot pass on (not JSON, too large)."""

    slug = "tool-result-invalid"
    title = "Tool returned an invalid result"


class ToolPendingError(ToolError):
    """An asynchronous call outlived ``async_after_ms``; its request is recorded and still in flight.

    ``extra`` carries ``correlation_id`` (the key of the durable pending record): calling the same tool
    call again (same call id) returns the reply once it has arrived, without sending the request again.
    """

    status = 202
    slug = "tool-pending"
    title = "Tool call is still in progress"
    default_retryable = True


class RecordError(ToolError):
    """A fixed-width record does not match its layout (wrong length, a bad digit or sign, a value that
    does not fit its field)."""

    slug = "record-invalid"
    title = "Record does not match its layout"


class LayoutError(RecordError):
    """A copybook-like layout file is invalid; raised when the tool is built, not per call."""

    slug = "layout-invalid"
    title = "Invalid record layout"


class TransportError(ToolError):
    """The broker refused or lost the request (connection, publisher confirm, stream write)."""

    slug = "transport-failed"
    title = "Message transport failed"
    default_retryable = True


class RemoteToolError(ToolError):
    """The backend answered with an error reply (e.g. it rejected a malformed request)."""

    slug = "backend-error"
    title = "Backend answered with an error"


class SoapFaultError(ToolError):
    """The SOAP service answered with a fault; ``extra`` has ``fault_code``."""

    slug = "soap-fault"
    title = "SOAP service returned a fault"


class TerminalError(ToolError):
    """A terminal session did not reach an expected screen or showed an error; ``extra`` has ``screen``
    (the last screen, as text) so the failure can be diagnosed."""

    slug = "terminal-failed"
    title = "Terminal session failed"


# --- http kind and credentials (issue 9)


class HttpRequestError(ToolError):
    """The arguments do not make a valid request (a URL that does not parse, a method that is not one)."""

    slug = "http-request-invalid"
    title = "Invalid HTTP request"


class HttpStatusError(ToolError):
    """The HTTP API answered an error status; ``extra`` has ``status``. Retryable for 429 and 5xx."""

    slug = "http-error"
    title = "HTTP API answered an error"


class CredentialError(ToolError):
    """No usable credential for the call; nothing was sent."""

    slug = "credentials-unavailable"
    title = "Credentials unavailable"


class TokenEndpointError(CredentialError):
    """The OAuth2 token endpoint failed (retryable) or refused the client (not retryable)."""

    slug = "token-endpoint-failed"
    title = "OAuth2 token request failed"


class InsufficientScopeError(CredentialError):
    """The token granted (or the end user's rights) lacks a scope the tool needs."""

    slug = "insufficient-scope"
    title = "Token lacks a required scope"


class CredentialRevokedError(CredentialError):
    """The agent identity was revoked: its tokens and leases are dropped and nothing is sent."""

    slug = "credentials-revoked"
    title = "Credentials revoked"


class SecretUnavailableError(CredentialError):
    """A secret could not be read: missing, access denied, or its provider down (retryable)."""

    slug = "secret-unavailable"
    title = "Secret unavailable"
