"""RBAC: permission patterns, deny by default, identities bound to roles, and the fleet's references."""

from __future__ import annotations

import pytest

from raygent.core.config import Fleet
from raygent.core.govconfig import RoleSpec, permission_matches
from raygent.governance.errors import PermissionDeniedError
from raygent.governance.rbac import Rbac
from raygent.serve.auth import required_permission


def test_permission_patterns() -> None:
    assert permission_matches("agents:run:support", "agents:run:support")
    assert not permission_matches("agents:run:support", "agents:run:refunds")
    assert permission_matches("agents:run:*", "agents:run:refunds")
    assert permission_matches("*:*", "identities:revoke")
    assert permission_matches("approvals:decide", "approvals:decide")
    assert not permission_matches("approvals:read", "approvals:decide")
    assert not permission_matches("tools:call:x", "tools:call")


def test_deny_by_default_and_identity_roles() -> None:
    rbac = Rbac(
        {
            "customer": RoleSpec(permissions=["agents:run:support"]),
            "refunds-agent": RoleSpec(
                identities=["svc-refunds@acme"], permissions=["tools:call:issue_refund"]
            ),
        }
    )
    assert rbac.allows(["customer"], "agents:run:support")
    assert not rbac.allows(["customer"], "agents:run:refunds")
    assert not rbac.allows([], "agents:run:support")
    assert not rbac.allows(["no-such-role"], "agents:run:support")
    assert rbac.roles_of_identity("svc-refunds@acme") == ("refunds-agent",)
    assert rbac.roles_of_identity("svc-unknown@acme") == ()
    with pytest.raises(PermissionDeniedError, match="roles: customer"):
        rbac.require(["customer"], "audit:read", who="'C1'")


def test_bad_permissions_are_config_errors() -> None:
    with pytest.raises(ValueError, match="resource:action"):
        RoleSpec(permissions=["everything"])


def test_roles_must_name_known_tools_and_agents(governed_fleet: Fleet) -> None:
    from raygent.core.config import cross_check

    data = governed_fleet.model_dump(by_alias=True, exclude={"base_dir", "state_dir"})
    data["roles"]["customer"]["permissions"] = ["agents:run:nobody", "tools:call:nothing"]
    data["validation"]["validator_agent"] = "ghost"
    issues = cross_check(Fleet.model_validate(data))
    messages = {(i.loc, i.message) for i in issues}
    assert (("roles", "customer", "permissions", 0), "unknown agent 'nobody'") in messages
    assert (("roles", "customer", "permissions", 1), "unknown tool 'nothing'") in messages
    assert (("validation", "validator_agent"), "unknown agent 'ghost'") in messages


@pytest.mark.parametrize(
    ("method", "path", "permission"),
    [
        ("POST", "/v1/agents/support/runs", "agents:run:support"),
        ("GET", "/v1/runs/run_1", "runs:read"),
        ("POST", "/v1/runs/run_1/cancel", "runs:cancel"),
        ("GET", "/v1/approvals", "approvals:read"),
        ("POST", "/v1/approvals/apr_1", "approvals:decide"),
        ("POST", "/v1/identities/refunds/revoke", "identities:revoke"),
        ("GET", "/v1/audit/verify", "audit:verify"),
        ("POST", "/v1/batches", "batches:write"),
        ("GET", "/ui/runs", "ui:runs"),
        ("GET", "/metrics", "api:access"),
    ],
)
def test_every_route_needs_a_permission(method: str, path: str, permission: str) -> None:
    assert required_permission(method, path)[0] == permission
