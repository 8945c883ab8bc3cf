"""Fleet-file settings of governance: authentication, roles, Cedar policies, approvals, spending limits,
second-agent validation and the audit trail's signing.

Every section is optional and off by default, so a fleet without them keeps working unchanged (no token,
no RBAC, no policy). Kept apart from :mod:`raygent.core.config` so the governance vocabulary is one
concept in one module; ``config`` imports it, never the other way round.

.. code-block:: yaml

    auth: {mode: local, issuer: raygent-local, end_user_claim: customer}
    roles:
      customer: {permissions: ["agents:run:support"]}
      approver: {permissions: ["agents:run:support", "approvals:read", "approvals:decide"]}
      refunds-agent: {identities: [svc-refunds@acme], permissions: ["tools:call:*"]}
    policies:
      schema: policies/support_desk.cedarschema
      files: [policies/refunds.cedar]
      tools: {issue_refund: {resource_type: Order, resource_arg: order_id, amount_arg: amount_usd}}
    approvals: {approver_role: approver, timeout_s: 3600, two_approvers_above_usd: 400}
    spending: {limits: [{tool: issue_refund, amount_arg: amount_usd, per_agent_per_day_usd: 1000}]}
    validation: {validator_agent: refund-checker, rules_file: policies/refund_rules.md}
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from raygent.core.config import ConfigIssue, Fleet

__all__ = [
    "ApprovalsSpec",
    "AuditSigningSpec",
    "AuthSpec",
    "JwtAlgorithm",
    "PoliciesSpec",
    "PolicyToolSpec",
    "RoleSpec",
    "SpendingLimitSpec",
    "SpendingSpec",
    "ValidationSpec",
    "governance_issues",
    "permission_matches",
]

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_ENTRYPOINT = r"^[\w./-]+:[A-Za-z_]\w*$"
# Asymmetric algorithms only: an HMAC algorithm next to a public key is the classic key-confusion hole,
# and "none" is never a signature. The pattern makes both impossible to configure.
JwtAlgorithm = Literal[
    "Ed25519", "EdDSA", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"
]
# resource:action[:name]; '*' matches any one part. Examples: agents:run:support, tools:call:*,
# approvals:decide, audit:read, identities:revoke.
_DEFAULT_ALGORITHMS: tuple[JwtAlgorithm, ...] = ("Ed25519",)
_PERMISSION = re.compile(r"^(\*|[a-z][a-z_-]*)(:(\*|[a-z][a-z0-9_-]*)){1,2}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSpec(_Strict):
    """Bearer JWTs on every API call (except health probes and the approvals page's login form).

    ``local`` mode signs and checks tokens with an Ed25519 key pair kept in the state directory
    (``raygent token issue`` mints them); ``jwks`` mode checks an external issuer's tokens against its
    JWKS URL.
    """

    mode: Literal["local", "jwks"] = "local"
    issuer: str = Field(default="raygent-local", min_length=1)
    audience: str | None = Field(default=None, description="Expected 'aud'; default: the fleet's name.")
    jwks_url: str | None = None
    jwks_cache_s: float = Field(default=300.0, ge=0, le=86_400)
    algorithms: list[JwtAlgorithm] = Field(default_factory=lambda: list(_DEFAULT_ALGORITHMS), min_length=1)
    leeway_s: int = Field(default=30, ge=0, le=300, description="Clock skew allowed on exp and nbf.")
    max_ttl_s: int = Field(default=86_400, ge=1, le=30 * 86_400, description="Longest local token.")
    role_claim: str = "role"
    end_user_claim: str = Field(
        default="customer", description="Claim naming the end user a caller acts for; default 'sub'."
    )
    tenant_claim: str = Field(
        default="tenant",
        description="Claim naming the caller's tenant (callback secrets, rate limits and idempotency "
        "scopes are per tenant); a token without it belongs to tenant 'default'.",
    )
    key_dir: str = Field(default="keys", description="Local issuer keys, relative to the state directory.")

    @model_validator(mode="after")
    def _jwks_needs_url(self) -> AuthSpec:
        if self.mode == "jwks" and not self.jwks_url:
            raise ValueError("auth mode 'jwks' needs jwks_url")
        if self.jwks_url is not None and not re.match(r"^https?://[^\s/]+", self.jwks_url):
            raise ValueError("jwks_url must be an http:// or https:// URL")
        return self


def permission_matches(granted: str, wanted: str) -> bool:
    """Whether the granted pattern covers the wanted permission (``*`` matches one part; a grant with
    fewer parts covers every name below it, so ``approvals:decide`` covers ``approvals:decide:any``)."""
    have, want = granted.split(":"), wanted.split(":")
    if len(have) > len(want):
        return False
    return all(h == "*" or h == w for h, w in zip(have, want, strict=False))


class RoleSpec(_Strict):
    """A role: what its holders may do. Callers get roles from their token's role claim; agents from
    ``identities`` (their service identity bound to the role). Nothing is allowed unless granted."""

    description: str = ""
    permissions: list[str] = Field(default_factory=list)
    identities: list[Annotated[str, Field(pattern=r"^[\w.:@-]{1,128}$")]] = Field(default_factory=list)

    @field_validator("permissions")
    @classmethod
    def _permission_syntax(cls, value: list[str]) -> list[str]:
        for permission in value:
            if not _PERMISSION.match(permission):
                raise ValueError(
                    f"permission {permission!r} must look like 'resource:action' or 'resource:action:name'"
                )
        return value


class PolicyToolSpec(_Strict):
    """How one tool call maps onto a Cedar request: the resource entity and the amount it moves."""

    resource_type: str = Field(default="Tool", pattern=r"^[A-Z][A-Za-z0-9_]*$")
    resource_arg: str | None = Field(default=None, description="Argument holding the resource id.")
    amount_arg: str | None = Field(default=None, description="Argument holding a USD amount.")


class PoliciesSpec(_Strict):
    """Cedar policies enforced on every tool call. Paths are relative to the fleet file."""

    schema_file: str | None = Field(default=None, alias="schema")
    files: list[str] = Field(min_length=1)
    tests: list[str] = Field(default_factory=list, description="Policy test case files (YAML).")
    resource_loader: str | None = Field(
        default=None,
        pattern=_ENTRYPOINT,
        description="file.py:function(resource_type, resource_id) -> attributes dict or None.",
    )
    tools: dict[Annotated[str, Field(pattern=_NAME)], PolicyToolSpec] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ApprovalsSpec(_Strict):
    """Human approval of held tool calls (the Cedar outcome ``require approval``)."""

    approver_role: Annotated[str, Field(pattern=_NAME)] = "approver"
    timeout_s: float = Field(default=3600.0, gt=0, le=30 * 86_400, description="Pending longer = denied.")
    two_approvers_above_usd: float | None = Field(default=None, ge=0)
    sweep_interval_s: float = Field(default=5.0, gt=0, le=3600)


class SpendingLimitSpec(_Strict):
    """A per-agent, per-UTC-day cap on the amounts one tool moves (refunds, payouts), not tokens."""

    tool: Annotated[str, Field(pattern=_NAME)]
    amount_arg: str
    per_agent_per_day_usd: float = Field(gt=0)
    agents: list[Annotated[str, Field(pattern=_NAME)]] = Field(
        default_factory=list, description="Agents the cap applies to; empty: every agent."
    )


class SpendingSpec(_Strict):
    limits: list[SpendingLimitSpec] = Field(default_factory=list)


class ValidationSpec(_Strict):
    """Second-agent validation: ``validator_agent`` (its own identity, usually a cheap model) checks a
    proposed action against the written business rules before it runs."""

    validator_agent: Annotated[str, Field(pattern=_NAME)]
    rules_file: str = Field(description="Business rules (text), relative to the fleet file.")
    timeout_s: float = Field(default=15.0, gt=0, le=600)


class AuditSigningSpec(_Strict):
    """Ed25519-signed checkpoints of the audit chain head; the key lives in the state directory."""

    checkpoint_every_records: int = Field(default=0, ge=0, description="0: only on demand.")
    redact_keys: list[str] = Field(
        default_factory=lambda: ["password", "secret", "token", "api_key", "authorization", "card_number"],
        description="Payload keys whose values are replaced before a record is written.",
    )


def governance_issues(fleet: Fleet) -> list[ConfigIssue]:
    """Names a governance section uses that the fleet does not define."""
    from raygent.core.config import ConfigIssue

    issues: list[ConfigIssue] = []

    def need(kind: str, name: str, known: object, loc: tuple[str | int, ...]) -> None:
        if name not in known:  # type: ignore[operator]
            issues.append(ConfigIssue(loc=loc, message=f"unknown {kind} {name!r}"))

    for role_name, role in fleet.roles.items():
        for index, permission in enumerate(role.permissions):
            parts = permission.split(":")
            if len(parts) == 3 and parts[2] != "*":
                if parts[0] == "tools":
                    need("tool", parts[2], fleet.tools, ("roles", role_name, "permissions", index))
                elif parts[0] == "agents":
                    need("agent", parts[2], fleet.agents, ("roles", role_name, "permissions", index))
    if fleet.policies is not None:
        for tool in fleet.policies.tools:
            need("tool", tool, fleet.tools, ("policies", "tools", tool))
    if fleet.auth is not None and fleet.roles:
        need("role", fleet.approvals.approver_role, fleet.roles, ("approvals", "approver_role"))
    for index, limit in enumerate(fleet.spending.limits):
        need("tool", limit.tool, fleet.tools, ("spending", "limits", index, "tool"))
        for agent in limit.agents:
            need("agent", agent, fleet.agents, ("spending", "limits", index, "agents"))
    if fleet.validation is not None:
        need("agent", fleet.validation.validator_agent, fleet.agents, ("validation", "validator_agent"))
    return issues
