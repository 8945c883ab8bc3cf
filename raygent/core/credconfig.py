"""Fleet-file settings of credentials (issue 9): the ``http`` tool kind, egress rules, OAuth2 clients per
agent identity, secrets providers and redaction.

Every section is optional, so fleets without them stay valid. Secrets never appear in the fleet file:
only *references* to them (``vault:tickets/api#api_key``), resolved inside the ToolGateway at call time.
Kept apart from :mod:`raygent.core.config` (which imports it) so the credential vocabulary is one module.

.. code-block:: yaml

    secrets:
      providers:
        vault: {kind: vault, url: http://127.0.0.1:8200, token_env: VAULT_TOKEN}
        local: {kind: file, dir: secrets}
    credentials:
      clients:
        svc-support@acme:                       # an agent identity
          token_url: http://127.0.0.1:9100/oauth/token
          client_id: support-agent
          client_secret: local:support-agent     # a secret reference
          allowed_scopes: [tickets:read, tickets:write]
    tools:
      create_ticket:
        kind: http
        method: POST
        url: http://127.0.0.1:9200/tickets
        scopes: [tickets:write]
        auth: {kind: oauth2}
        egress: [{hosts: ["127.0.0.1:9200"], methods: [POST], paths: [/tickets]}]
"""

from __future__ import annotations

import re
import string
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from raygent.core.config import ConfigIssue, Fleet

__all__ = [
    "HTTP_METHODS",
    "BearerAuthSpec",
    "CredentialsSpec",
    "EgressRuleSpec",
    "EnvSecretsSpec",
    "FileSecretsSpec",
    "HeaderAuthSpec",
    "HttpMethod",
    "HttpToolBase",
    "OAuth2AuthSpec",
    "OAuth2ClientSpec",
    "RedactionSpec",
    "SecretRef",
    "SecretsSpec",
    "TokenExchangeSpec",
    "VaultSecretsSpec",
    "credential_issues",
    "template_fields",
]

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
HTTP_METHODS: tuple[str, ...] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_PROVIDER = r"^[a-z][a-z0-9_-]{0,62}$"
_REF = re.compile(r"^(?P<provider>[a-z][a-z0-9_-]{0,62}):(?P<path>[^#\s]+)(#(?P<key>[^#\s]+))?$")
_SCOPE = r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$"  # RFC 6749 scope-token characters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def template_fields(template: str) -> list[str]:
    """The ``{name}`` fields of a ``str.format`` template (no attribute/index access allowed).

    Raises:
        ValueError: The template does not parse or uses ``{a.b}`` / ``{a[0]}`` / positional fields.
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r} does not parse: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not re.fullmatch(r"[A-Za-z_]\w*", field) or spec or conversion:
            raise ValueError(f"template {template!r}: fields must be plain names like {{order_id}}")
        names.append(field)
    return names


# ------------------------------------------------------------------------------------------- secrets


class SecretRef(_Strict):
    """Where a secret lives: ``provider`` (a name under ``secrets.providers``), ``path`` in it and an
    optional ``key`` inside the secret. Write it as ``provider:path#key`` or as a mapping; ``lease: true``
    asks a Vault provider for a leased (dynamic) secret, renewed while it is used."""

    provider: str = Field(pattern=_PROVIDER)
    path: str = Field(min_length=1, max_length=512)
    key: str | None = Field(default=None, min_length=1, max_length=256)
    lease: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _REF.fullmatch(value)
            if match is None:
                raise ValueError(
                    f"secret reference {value!r} must look like 'provider:path' or 'provider:path#key'"
                )
            return {k: v for k, v in match.groupdict().items() if v is not None}
        return value

    def __str__(self) -> str:
        return f"{self.provider}:{self.path}" + (f"#{self.key}" if self.key else "")


class EnvSecretsSpec(_Strict):
    """Secrets from the gateway process's environment; ``path`` is the variable name after ``prefix``."""

    kind: Literal["env"]
    prefix: str = Field(default="", pattern=r"^[A-Z0-9_]*$", description="Only variables with this prefix.")


class FileSecretsSpec(_Strict):
    """One secret per file under ``dir`` (relative to the fleet file); ``#key`` reads a JSON file's key."""

    kind: Literal["file"]
    dir: str = "secrets"


class VaultSecretsSpec(_Strict):
    """HashiCorp Vault over its HTTP API: KV v2 reads, and leased secrets renewed while in use."""

    kind: Literal["vault"]
    url: str | None = Field(default=None, pattern=r"^https?://", description="Default: $VAULT_ADDR.")
    token_env: str = Field(default="VAULT_TOKEN", description="Variable holding the gateway's Vault token.")
    namespace: str | None = None
    kv_mount: str = Field(default="secret", pattern=r"^[\w.-]+(/[\w.-]+)*$")
    kv_cache_s: float = Field(default=0.0, ge=0, le=3600, description="0: read at every call.")
    renew_increment_s: int = Field(default=60, ge=1, le=86_400, description="Asked for at each renewal.")
    renew_before_s: float = Field(
        default=10.0, ge=0, le=86_400, description="Renew a lease this long before it ends."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    verify_tls: bool = True


SecretsProviderSpec = Annotated[
    EnvSecretsSpec | FileSecretsSpec | VaultSecretsSpec, Field(discriminator="kind")
]


class SecretsSpec(_Strict):
    providers: dict[Annotated[str, Field(pattern=_PROVIDER)], SecretsProviderSpec] = Field(
        default_factory=dict
    )


# --------------------------------------------------------------------------------------- credentials


class TokenExchangeSpec(_Strict):
    """RFC 8693 token exchange: the agent's token is exchanged for one acting for the run's end user.

    The gateway signs a short-lived subject assertion (a JWT naming the end user, HS256 with
    ``assertion_key``) that the token endpoint trusts; the endpoint grants the intersection of the end
    user's rights, the agent client's rights and the tool's scopes.
    """

    token_url: str | None = Field(default=None, pattern=r"^https?://", description="Default: the client's.")
    audience: str | None = None
    assertion_issuer: str = "raygent-gateway"
    assertion_key: SecretRef
    assertion_ttl_s: int = Field(default=30, ge=1, le=600)


class OAuth2ClientSpec(_Strict):
    """The OAuth2 client (client credentials grant) of one agent identity."""

    token_url: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1, max_length=256)
    client_secret: SecretRef
    auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic"
    allowed_scopes: list[Annotated[str, Field(pattern=_SCOPE)]] = Field(
        default_factory=list, description="The most this identity may ask for; empty: whatever tools ask."
    )
    audience: str | None = None
    expiry_skew_s: float = Field(
        default=1.0, ge=0, le=3600, description="A token this close to expiry is renewed before use."
    )
    default_ttl_s: float = Field(default=60.0, gt=0, le=86_400, description="When expires_in is absent.")
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    token_exchange: TokenExchangeSpec | None = None


class CredentialsSpec(_Strict):
    clients: dict[Annotated[str, Field(pattern=r"^[\w.:@-]{1,128}$")], OAuth2ClientSpec] = Field(
        default_factory=dict, description="OAuth2 clients by agent identity."
    )


# ---------------------------------------------------------------------------------------- http tools


class EgressRuleSpec(_Strict):
    """What a tool may reach: any of ``hosts`` (``host`` or ``host:port``, ``*.`` prefix for subdomains),
    with any of ``methods``, at any of ``paths`` (``*`` is one path segment, a trailing ``/**`` any rest)."""

    hosts: list[Annotated[str, Field(pattern=r"^(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")]] = Field(min_length=1)
    methods: list[HttpMethod] = Field(min_length=1)
    paths: list[Annotated[str, Field(pattern=r"^/[^\s?#]*$")]] = Field(min_length=1)
    schemes: list[Literal["http", "https"]] = Field(default=["http", "https"], min_length=1)


class OAuth2AuthSpec(_Strict):
    """A bearer token of the calling agent's OAuth2 client, with the tool's ``scopes``."""

    kind: Literal["oauth2"]
    on_behalf_of_user: bool = Field(
        default=False, description="Exchange for a token acting for the run's end user (RFC 8693)."
    )


class BearerAuthSpec(_Strict):
    """A static bearer token from a secrets provider."""

    kind: Literal["bearer"]
    secret: SecretRef


class HeaderAuthSpec(_Strict):
    """An API key header from a secrets provider."""

    kind: Literal["header"]
    header: str = Field(pattern=r"^[A-Za-z0-9-]{1,64}$")
    secret: SecretRef


HttpAuthSpec = Annotated[OAuth2AuthSpec | BearerAuthSpec | HeaderAuthSpec, Field(discriminator="kind")]


class HttpToolBase(_Strict):
    """Fields of the ``http`` tool kind (the tool spec in :mod:`raygent.core.config` adds the common ones).

    ``method`` and ``url`` are templates over the arguments: ``{name}`` in the path is one percent-encoded
    segment, so an argument can never add ``/`` or ``..``. Arguments not used by the URL or ``query`` go
    to the JSON body (``body: auto`` for POST/PUT/PATCH) or the query string (GET/HEAD/DELETE).
    """

    kind: Literal["http"]
    method: str = Field(description="An HTTP method, or a template such as '{method}'.")
    url: str = Field(min_length=1, max_length=2048)
    query: dict[str, str] = Field(default_factory=dict, description="Query parameters (templates).")
    headers: dict[str, str] = Field(default_factory=dict, description="Plain headers (no secrets).")
    secret_headers: dict[str, SecretRef] = Field(default_factory=dict)
    body: Literal["auto", "json", "none"] = "auto"
    auth: HttpAuthSpec | None = None
    response: dict[str, str] = Field(
        default_factory=dict, description="Result fields by JSON pointer into the response; empty: all."
    )
    connect_timeout_s: float = Field(default=3.0, gt=0, le=120)
    max_response_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    egress: list[EgressRuleSpec] = Field(
        default_factory=list, description="Default: the URL's own host, method and path pattern."
    )

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if "{" in value:
            template_fields(value)
            return value
        upper = value.upper()
        if upper not in HTTP_METHODS:
            raise ValueError(f"method must be one of {', '.join(HTTP_METHODS)} or a template")
        return upper

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        template_fields(value)
        if not value.startswith("{") and not re.match(r"^https?://[^/{}\s]+(/|$)", value):
            raise ValueError("url must be an http(s):// URL with a fixed host, or a template such as '{url}'")
        return value

    @field_validator("response")
    @classmethod
    def _pointers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pointer in value.items():
            if pointer and not pointer.startswith("/"):
                raise ValueError(f"response.{name}: {pointer!r} is not a JSON pointer (starts with '/')")
        return value

    @model_validator(mode="after")
    def _egress_needed(self) -> HttpToolBase:
        templated = "{" in self.method or self.url.startswith("{") or "{" in _host_part(self.url)
        if templated and not self.egress:
            raise ValueError(
                "a tool whose method or host comes from the arguments needs explicit 'egress' rules"
            )
        return self


def _host_part(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0]


# ----------------------------------------------------------------------------------------- redaction


class RedactionSpec(_Strict):
    """What is masked in audit payloads, span attributes, log lines and error details, besides every
    secret value and token the gateway resolved (always masked)."""

    pii: list[Literal["email", "phone", "card", "ssn", "iban"]] = Field(default_factory=list)
    patterns: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")], str] = Field(
        default_factory=dict, description="Extra regexes by name (masked as [REDACTED:name])."
    )
    keys: list[str] = Field(default_factory=list, description="Extra field names whose values are masked.")

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"patterns.{name} is not a valid regular expression: {exc}") from None
        return value


# ----------------------------------------------------------------------------------- cross checks


def _refs_of(fleet: Fleet) -> list[tuple[tuple[str | int, ...], SecretRef]]:
    refs: list[tuple[tuple[str | int, ...], SecretRef]] = []
    for identity, client in fleet.credentials.clients.items():
        refs.append((("credentials", "clients", identity, "client_secret"), client.client_secret))
        if client.token_exchange is not None:
            where = ("credentials", "clients", identity, "token_exchange", "assertion_key")
            refs.append((where, client.token_exchange.assertion_key))
    for name, tool in fleet.tools.items():
        if not isinstance(tool, HttpToolBase):
            continue
        for header, ref in tool.secret_headers.items():
            refs.append((("tools", name, "secret_headers", header), ref))
        if isinstance(tool.auth, BearerAuthSpec | HeaderAuthSpec):
            refs.append((("tools", name, "auth", "secret"), tool.auth.secret))
    return refs


def credential_issues(fleet: Fleet) -> list[ConfigIssue]:
    """Every secret reference names a provider; every agent with an OAuth2 tool has a client whose
    allowed scopes cover the tool's; token exchange is configured where a tool acts for the user."""
    from raygent.core.config import ConfigIssue

    issues: list[ConfigIssue] = []
    providers = fleet.secrets.providers
    for loc, ref in _refs_of(fleet):
        if ref.provider not in providers:
            issues.append(ConfigIssue(loc=loc, message=f"unknown secrets provider {ref.provider!r}"))
        elif ref.lease and not isinstance(providers[ref.provider], VaultSecretsSpec):
            issues.append(ConfigIssue(loc=loc, message="only a vault provider has leased secrets"))
    for agent_name, agent in fleet.agents.items():
        client = fleet.credentials.clients.get(agent.identity)
        for index, tool_name in enumerate(agent.tools):
            tool = fleet.tools.get(tool_name)
            if not isinstance(tool, HttpToolBase) or not isinstance(tool.auth, OAuth2AuthSpec):
                continue
            loc = ("agents", agent_name, "tools", index)
            if client is None:
                message = f"tool {tool_name!r} uses OAuth2 but identity {agent.identity!r} has no client"
                issues.append(ConfigIssue(loc=loc, message=message))
                continue
            scopes: list[str] = getattr(tool, "scopes", [])
            extra = sorted(set(scopes) - set(client.allowed_scopes)) if client.allowed_scopes else []
            if extra:
                message = f"tool {tool_name!r} needs scopes {extra} that {agent.identity!r} may not ask for"
                issues.append(ConfigIssue(loc=loc, message=message))
            if tool.auth.on_behalf_of_user and client.token_exchange is None:
                message = f"tool {tool_name!r} acts for the user but {agent.identity!r} has no token_exchange"
                issues.append(ConfigIssue(loc=loc, message=message))
    return issues
