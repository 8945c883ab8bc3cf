"""The governance commands through the real entry point: token issue, policy test, identity revoke and
restore, audit checkpoints and export; clear messages and exit codes, never a traceback."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

from raygent.core.clock import SystemClock
from raygent.core.fleetfile import load_fleet
from raygent.governance.auth import build_verifier

REPO = Path(__file__).resolve().parents[3]
GOVERNED = REPO / "examples" / "support_desk" / "governed.yaml"
EXAMPLE = REPO / "examples" / "support_desk" / "fleet.yaml"
RAYGENT = str(Path(sys.executable).parent / "raygent")


def raygent(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([RAYGENT, *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stdout + done.stderr
    return done


def test_token_issue_mints_a_token_the_fleet_accepts(tmp_path: Path) -> None:
    done = raygent("token", "issue", "--role", "approver", "--sub", "alice", "--ttl-s", "120",
                   "-f", str(GOVERNED), "--state-dir", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr
    fleet = load_fleet(GOVERNED, state_dir=tmp_path)
    assert fleet.auth is not None
    verifier, _ = build_verifier(fleet.auth, fleet_name=fleet.name, state_dir=tmp_path, clock=SystemClock())
    principal = asyncio.run(verifier.verify(done.stdout.strip()))
    assert principal.subject == "alice" and principal.roles == ("approver",)


def test_token_issue_refuses_bad_requests(tmp_path: Path) -> None:
    unknown = raygent(
        "token", "issue", "--role", "wizard", "--sub", "a", "-f", str(GOVERNED), "--state-dir", str(tmp_path)
    )
    assert unknown.returncode == 2 and "unknown role" in unknown.stderr
    no_auth = raygent(
        "token", "issue", "--role", "x", "--sub", "a", "-f", str(EXAMPLE), "--state-dir", str(tmp_path)
    )
    assert no_auth.returncode == 2 and "no 'auth' section" in no_auth.stderr
    too_long = raygent("token", "issue", "--role", "customer", "--sub", "a", "--ttl-s", "99999999",
                       "-f", str(GOVERNED), "--state-dir", str(tmp_path))  # fmt: skip
    assert too_long.returncode == 2 and "ttl" in too_long.stderr


def test_policy_test_passes_the_example_and_fails_a_wrong_case(tmp_path: Path) -> None:
    done = raygent("policy", "test", "-f", str(GOVERNED), "--state-dir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "7 case(s), 0 failed; schema errors: 0" in done.stdout
    copy = tmp_path / "fleet"
    shutil.copytree(REPO / "examples" / "support_desk", copy, ignore=shutil.ignore_patterns(".raygent"))
    cases = copy / "policies" / "refunds.tests.yaml"
    cases.write_text(cases.read_text().replace("expect: deny\n  reason: another customer", "expect: allow"))
    failed = raygent("policy", "test", "-f", str(copy / "governed.yaml"), "--state-dir", str(tmp_path))
    assert failed.returncode == 1
    assert "FAIL" in failed.stdout and "expected allow, got deny" in failed.stdout


def test_identity_revoke_restore_and_audit_signing(tmp_path: Path) -> None:
    common = ["-f", str(GOVERNED), "--state-dir", str(tmp_path)]
    assert raygent("identity", "revoke", "refunds", "--reason", "drill", *common).returncode == 0
    listed = raygent("identity", "list", *common)
    assert "svc-refunds@acme" in listed.stdout and "drill" in listed.stdout
    assert raygent("identity", "revoke", "nobody", *common).returncode == 2
    assert "restored refunds" in raygent("identity", "restore", "refunds", *common).stdout
    checkpoint = json.loads(raygent("audit", "checkpoint", *common).stdout)
    assert checkpoint["seq"] == 2 and checkpoint["signature"]
    assert "1 checkpoint(s) verified" in raygent("audit", "checkpoints", *common).stdout
    exported = [json.loads(line) for line in raygent("audit", "export", *common).stdout.splitlines()]
    assert [r["payload"]["action"] for r in exported] == ["identity_revoked", "identity_restored"]
    assert raygent("audit", "verify", *common).returncode == 0


def test_approvals_cli_needs_a_token() -> None:
    done = subprocess.run(
        [RAYGENT, "approvals", "list", "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2 and "token is needed" in done.stderr


def test_governance_copy_to_postgres_carries_the_state_over_once(tmp_path: Path) -> None:
    import uuid

    import psycopg

    dsn, schema = "postgresql://postgres@127.0.0.1:5432/postgres", f"rg_copy_{uuid.uuid4().hex[:12]}"
    common = ["--state-dir", str(tmp_path / "state")]
    assert (
        raygent("identity", "revoke", "refunds", "--reason", "drill", "-f", str(GOVERNED), *common).returncode
        == 0
    )
    assert raygent("audit", "checkpoint", "-f", str(GOVERNED), *common).returncode == 0
    copy = tmp_path / "fleet"
    shutil.copytree(GOVERNED.parent, copy, ignore=shutil.ignore_patterns(".raygent"))
    shared = copy / "governed.yaml"
    shared.write_text(
        shared.read_text().replace(
            "store:\n  kind: sqlite\n",
            f"store:\n  kind: sqlite\n  governance_dsn: {dsn}\n  audit_schema: {schema}\n",
        )
    )
    try:
        first = raygent("governance", "copy-to-postgres", "-f", str(shared), *common)
        assert first.returncode == 0, first.stderr
        assert "revocations: 1 read, 1 copied" in first.stdout
        assert "checkpoints: 1 read, 1 copied" in first.stdout
        listed = raygent("identity", "list", "-f", str(shared), *common)  # read from PostgreSQL now
        assert "svc-refunds@acme" in listed.stdout and "drill" in listed.stdout
        again = raygent("governance", "copy-to-postgres", "-f", str(shared), *common)
        assert again.returncode == 0 and "revocations: 1 read, 0 copied" in again.stdout
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    nowhere = raygent("governance", "copy-to-postgres", "-f", str(GOVERNED), *common)
    assert nowhere.returncode == 2 and "names no store.governance_dsn" in nowhere.stderr
    missing = raygent(
        "governance", "copy-to-postgres", "-f", str(shared), "--from", str(tmp_path / "none.db")
    )
    assert missing.returncode == 2 and "no governance state to copy" in missing.stderr
