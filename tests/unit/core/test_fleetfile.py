"""load_fleet / check_fleet_file: the example loads, and every problem is located at file:line:column.

Broken fleets are derived from the example by one small text edit each, so the expected line and column
are computed from the edited text rather than hard-coded: the tests keep working when the example grows.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raygent.core import fleetfile
from raygent.core.config import AgentToolSpec, Fleet, OfflineModelSpec, PythonToolSpec
from raygent.core.errors import ConfigError
from raygent.core.fleetfile import FleetFileError, LocatedIssue, check_fleet_file, load_fleet

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "support_desk" / "fleet.yaml"
SOURCE = EXAMPLE.read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def _no_state_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own RAYGENT_STATE_DIR must not change what these tests see.
    monkeypatch.delenv("RAYGENT_STATE_DIR", raising=False)


# ------------------------------------------------------------------------------------------- helpers


def edit(text: str, old: str, new: str) -> str:
    """Replace the single occurrence of ``old``; fails loudly if the example no longer has it."""
    assert text.count(old) == 1, f"expected exactly one {old!r} in the example fleet"
    return text.replace(old, new)


def write(tmp_path: Path, text: str | bytes, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based number of the only line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) == 1, f"{needle!r} is on lines {hits}, expected exactly one"
    return hits[0]


def column_of(text: str, needle: str, token: str) -> int:
    """1-based column of ``token`` on the only line containing ``needle``."""
    line = text.splitlines()[line_of(text, needle) - 1]
    assert token in line
    return line.index(token) + 1


def agent_body_line(text: str, agent: str) -> int:
    """Line of the first key of ``agents.<agent>`` (where its mapping node starts)."""
    lines = text.splitlines()
    start = lines.index("agents:")
    header = lines.index(f"  {agent}:", start)
    return header + 2


def only_issue(path: Path) -> LocatedIssue:
    fleet, issues = check_fleet_file(path)
    assert fleet is None
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def where(issue: LocatedIssue) -> tuple[int, int]:
    return issue.line, issue.column


# ------------------------------------------------------------------------------------ the good path


def test_example_fleet_loads() -> None:
    fleet = load_fleet(EXAMPLE)

    assert fleet.name == "support-desk"
    assert set(fleet.agents) == {"support", "orders", "refunds"}
    assert fleet.agents["support"].tools == ["ask_orders", "ask_refunds"]
    assert fleet.agents["refunds"].tools == ["lookup_order", "issue_refund"]
    assert fleet.agents["support"].prompt == "support@2"
    assert set(fleet.prompts) == {"support", "orders", "refunds"}
    assert set(fleet.prompts["support"].versions) >= {"1", "2"}
    assert "$agent" in fleet.prompt_text("support@2")
    assert {"lookup_order", "issue_refund", "ask_orders", "ask_refunds"} <= set(fleet.tools)
    assert isinstance(fleet.tools["lookup_order"], PythonToolSpec)
    assert isinstance(fleet.tools["ask_refunds"], AgentToolSpec)
    assert fleet.tools["ask_refunds"].agent == "refunds"
    assert fleet.tools["issue_refund"].side_effect is True
    assert fleet.tools["issue_refund"].scopes == ["refunds:write"]
    premium = fleet.models["premium"]
    assert isinstance(premium, OfflineModelSpec)
    assert premium.tier == "premium"
    assert premium.rules, "the premium model's script must not be empty"
    # The YAML alias gives the cheap model the same script.
    small = fleet.models["open-small"]
    assert isinstance(small, OfflineModelSpec)
    assert small.tier == "cheap"
    assert small.rules == premium.rules


def test_example_fleet_has_no_issues() -> None:
    fleet, issues = check_fleet_file(EXAMPLE)
    assert issues == []
    assert isinstance(fleet, Fleet)


def test_paths_default_under_the_fleet_directory() -> None:
    fleet = load_fleet(EXAMPLE)
    assert Path(fleet.base_dir) == EXAMPLE.parent
    assert fleet.state_dir == ""
    assert fleet.state_path(fleet.store.path) == EXAMPLE.parent / ".raygent" / "raygent.db"
    assert fleet.resolve_path("tools.py") == EXAMPLE.parent / "tools.py"


def test_state_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYGENT_STATE_DIR", str(tmp_path / "env-state"))
    fleet = load_fleet(EXAMPLE)
    assert fleet.state_path("raygent.db") == tmp_path / "env-state" / "raygent.db"
    # Code paths stay relative to the fleet file whatever the state directory is.
    assert fleet.resolve_path("tools.py") == EXAMPLE.parent / "tools.py"


def test_state_dir_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYGENT_STATE_DIR", str(tmp_path / "env-state"))
    fleet = load_fleet(EXAMPLE, state_dir=tmp_path / "arg-state")
    assert fleet.state_path("raygent.db") == tmp_path / "arg-state" / "raygent.db"


def test_relative_state_dir_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fleet = load_fleet(EXAMPLE, state_dir="state")
    assert Path(fleet.state_dir).is_absolute()
    assert fleet.state_path("x.db") == tmp_path.resolve() / "state" / "x.db"


def test_relative_fleet_path_gets_an_absolute_base_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, SOURCE)
    monkeypatch.chdir(tmp_path)
    fleet = load_fleet("fleet.yaml")
    assert Path(fleet.base_dir) == tmp_path.resolve()


def test_load_fleet_accepts_a_copy_elsewhere(tmp_path: Path) -> None:
    fleet = load_fleet(write(tmp_path, SOURCE))
    assert Path(fleet.base_dir) == tmp_path.resolve()
    assert fleet.state_path("raygent.db") == tmp_path.resolve() / ".raygent" / "raygent.db"


# --------------------------------------------------------------------------- schema errors, located


def test_unknown_key_points_at_the_key(tmp_path: Path) -> None:
    text = edit(SOURCE, "    max_steps: 6\n", "    max_step: 6\n")
    issue = only_issue(write(tmp_path, text))

    assert where(issue) == (line_of(text, "max_step: 6"), column_of(text, "max_step: 6", "max_step"))
    assert "agents.support.max_step" in issue.message
    assert "unknown key" in issue.message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    text = edit(SOURCE, "telemetry:\n", "telemetri:\n")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "telemetri:"), 1)
    assert issue.message.startswith("telemetri: unknown key")


def test_wrong_type_points_at_the_value(tmp_path: Path) -> None:
    text = edit(SOURCE, "    max_steps: 6\n", "    max_steps: many\n")
    issue = only_issue(write(tmp_path, text))

    assert where(issue) == (line_of(text, "max_steps: many"), column_of(text, "max_steps: many", "many"))
    assert "agents.support.max_steps" in issue.message
    assert "integer" in issue.message


def test_out_of_range_value(tmp_path: Path) -> None:
    text = edit(SOURCE, "  port: 8000\n", "  port: 70000\n")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "port: 70000"), column_of(text, "port: 70000", "70000"))
    assert "server.port" in issue.message
    assert "65535" in issue.message


def test_missing_required_key_points_at_the_parent_mapping(tmp_path: Path) -> None:
    text = edit(SOURCE, "    identity: svc-orders@acme\n", "")
    issue = only_issue(write(tmp_path, text))

    assert where(issue) == (agent_body_line(text, "orders"), 5)
    assert "agents.orders.identity" in issue.message
    assert "missing" in issue.message


def test_missing_top_level_key(tmp_path: Path) -> None:
    text = edit(SOURCE, "name: support-desk\n", "")
    issue = only_issue(write(tmp_path, text))
    # The parent is the document's mapping, which starts at its first key (after the comments).
    first_key = next(
        n for n, line in enumerate(text.splitlines(), start=1) if line.strip() and not line.startswith("#")
    )
    assert where(issue) == (first_key, 1)
    assert issue.message.startswith("name: required key is missing")


def test_bad_regex_in_an_offline_rule(tmp_path: Path) -> None:
    old = r"'(?i)^\s*(hi|hello|hey)\b'"
    text = edit(SOURCE, old, "'(?i)^(hi|hello'")
    fleet, issues = check_fleet_file(write(tmp_path, text))

    assert fleet is None
    expected = (line_of(text, "(?i)^(hi|hello'"), column_of(text, "(?i)^(hi|hello'", "'(?i)"))
    assert issues, "a bad regex must be reported"
    # Both models share the script through a YAML alias, so both report the same place.
    assert {where(i) for i in issues} == {expected}
    premium = [i for i in issues if i.message.startswith("models.premium.rules.")]
    assert len(premium) == 1
    assert ".match: not a valid regular expression" in premium[0].message
    # The discriminator tag ('offline') is not a key of the file and must not appear in the path.
    assert ".offline." not in premium[0].message


def test_offline_rule_with_both_call_and_say(tmp_path: Path) -> None:
    text = edit(
        SOURCE, "    rules: &rules\n", '    rules: &rules\n      - say: "hi"\n        call: lookup_order\n'
    )
    fleet, issues = check_fleet_file(write(tmp_path, text))
    assert fleet is None
    premium = [i for i in issues if i.message.startswith("models.premium.rules.0:")]
    assert len(premium) == 1
    assert where(premium[0]) == (line_of(text, '- say: "hi"'), column_of(text, '- say: "hi"', "say"))
    assert "exactly one of 'call' or 'say'" in premium[0].message


def test_tool_field_error_names_the_key_path_without_the_kind_tag(tmp_path: Path) -> None:
    text = edit(SOURCE, "    timeout_s: 5\n", "    timeout_s: 0\n")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "timeout_s: 0"), column_of(text, "timeout_s: 0", "0"))
    assert issue.message.startswith("tools.lookup_order.timeout_s:")
    assert "greater than 0" in issue.message


def test_governance_dsn_must_be_a_postgresql_url(tmp_path: Path) -> None:
    text = edit(SOURCE, "  kind: sqlite\n", "  kind: sqlite\n  governance_dsn: mysql://db/raygent\n")
    issue = only_issue(write(tmp_path, text))
    bad = "governance_dsn: mysql"
    assert where(issue) == (line_of(text, bad), column_of(text, bad, "mysql://"))
    assert issue.message.startswith("store.governance_dsn:")
    assert "postgresql:// or postgres://" in issue.message


def test_unknown_tool_kind(tmp_path: Path) -> None:
    text = edit(SOURCE, "    kind: agent\n    agent: orders\n", "    kind: agnet\n    agent: orders\n")
    issue = only_issue(write(tmp_path, text))
    assert issue.line == line_of(text, "kind: agnet")
    assert "tools.ask_orders" in issue.message
    assert "'agnet'" in issue.message


def test_tool_parameters_must_be_an_object_schema(tmp_path: Path) -> None:
    old = "    description: Look an order up by its number.\n    parameters:\n      type: object\n"
    text = edit(SOURCE, old, old.replace("type: object", "type: array"))
    issue = only_issue(write(tmp_path, text))
    # The parameters mapping starts at its first key, the line that was edited.
    assert where(issue) == (line_of(text, "type: array"), 7)
    assert issue.message.startswith("tools.lookup_order.parameters:")
    assert "type: object" in issue.message


def test_bad_prompt_reference_format(tmp_path: Path) -> None:
    text = edit(SOURCE, "prompt: orders@1", "prompt: orders")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "prompt: orders"), column_of(text, "prompt: orders", "orders"))
    assert "agents.orders.prompt" in issue.message
    assert "name@version" in issue.message


def test_messages_are_plain_sentences(tmp_path: Path) -> None:
    text = edit(SOURCE, "prompt: orders@1", "prompt: orders")
    issue = only_issue(write(tmp_path, text))
    assert "Value error" not in issue.message
    assert "https://errors.pydantic.dev" not in issue.message
    assert str(issue) == f"{tmp_path / 'fleet.yaml'}:{issue.line}:{issue.column}: {issue.message}"


# ---------------------------------------------------------------------------- cross-reference errors


def test_unknown_tool_points_at_the_list_item(tmp_path: Path) -> None:
    text = edit(SOURCE, "tools: [lookup_order]", "tools: [lookup_ordr]")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "[lookup_ordr]"), column_of(text, "[lookup_ordr]", "lookup_ordr"))
    assert issue.message == "agents.orders.tools.0: unknown tool 'lookup_ordr'"


def test_unknown_tool_second_item_of_a_list(tmp_path: Path) -> None:
    text = edit(SOURCE, "tools: [lookup_order, issue_refund]", "tools: [lookup_order, issue_refnd]")
    issue = only_issue(write(tmp_path, text))
    needle = "[lookup_order, issue_refnd]"
    assert where(issue) == (line_of(text, needle), column_of(text, needle, "issue_refnd"))
    assert issue.message == "agents.refunds.tools.1: unknown tool 'issue_refnd'"


def test_unknown_tool_in_a_block_list(tmp_path: Path) -> None:
    text = edit(
        SOURCE, "    tools: [lookup_order]\n", "    tools:\n      - lookup_order\n      - no_such_tool\n"
    )
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (
        line_of(text, "- no_such_tool"),
        column_of(text, "- no_such_tool", "no_such_tool"),
    )
    assert "agents.orders.tools.1" in issue.message


def test_unknown_prompt(tmp_path: Path) -> None:
    text = edit(SOURCE, "prompt: orders@1", "prompt: order@1")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "prompt: order@1"), column_of(text, "prompt: order@1", "order@1"))
    assert issue.message == "agents.orders.prompt: unknown prompt 'order'"


def test_unknown_prompt_version(tmp_path: Path) -> None:
    text = edit(SOURCE, "prompt: orders@1", "prompt: orders@9")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (
        line_of(text, "prompt: orders@9"),
        column_of(text, "prompt: orders@9", "orders@9"),
    )
    assert "agents.orders.prompt" in issue.message
    assert "no version '9'" in issue.message
    assert "known: 1" in issue.message


def test_unknown_delegation_agent(tmp_path: Path) -> None:
    text = edit(SOURCE, "    agent: refunds\n", "    agent: refundz\n")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "agent: refundz"), column_of(text, "agent: refundz", "refundz"))
    assert issue.message == "tools.ask_refunds.agent: unknown agent 'refundz'"


def test_unknown_tool_called_by_an_offline_rule(tmp_path: Path) -> None:
    text = edit(SOURCE, "        call: issue_refund\n", "        call: issue_refnd\n")
    fleet, issues = check_fleet_file(write(tmp_path, text))
    assert fleet is None
    expected = (line_of(text, "call: issue_refnd"), column_of(text, "call: issue_refnd", "issue_refnd"))
    assert {where(i) for i in issues} == {expected}
    assert {i.message.split(".")[1] for i in issues} == {"premium", "open-small"}
    assert all(i.message.endswith(".call: unknown tool 'issue_refnd'") for i in issues)


def test_tier_that_no_model_has(tmp_path: Path) -> None:
    text = edit(
        SOURCE,
        "    tier: cheap\n    tools: [lookup_order]\n",
        "    tier: standard\n    tools: [lookup_order]\n",
    )
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "tier: standard"), column_of(text, "tier: standard", "standard"))
    assert "agents.orders.tier" in issue.message
    assert "no model has tier 'standard'" in issue.message


# ------------------------------------------------------------------------------------- YAML problems


def test_duplicate_key_points_at_the_second_occurrence(tmp_path: Path) -> None:
    text = edit(SOURCE, "    max_steps: 6\n", "    max_steps: 6\n    max_steps: 7\n")
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "max_steps: 7"), 5)
    assert issue.message == "duplicate key 'max_steps'"


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    text = SOURCE + "\nname: another-name\n"
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "name: another-name"), 1)
    assert "duplicate key 'name'" in issue.message


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    text = edit(SOURCE, "  port: 8000\n", "  port: [8000\n")
    issue = only_issue(write(tmp_path, text))
    # The unclosed flow sequence is detected on the next line (max_body_bytes: …).
    assert issue.line == line_of(text, "max_body_bytes")
    assert issue.column >= 1
    assert issue.message.startswith("not valid YAML:")


def test_bad_indentation(tmp_path: Path) -> None:
    text = edit(SOURCE, "  host: 127.0.0.1\n", "  host: 127.0.0.1\n port: 1\n")
    issue = only_issue(write(tmp_path, text))
    assert issue.line == line_of(text, " port: 1")
    assert issue.message.startswith("not valid YAML:")


def test_two_documents_are_rejected(tmp_path: Path) -> None:
    issue = only_issue(write(tmp_path, SOURCE + "---\nname: second\n"))
    assert issue.message.startswith("not valid YAML:")
    assert issue.line == SOURCE.count("\n") + 1


@pytest.mark.parametrize(
    "text",
    ["- a\n- b\n", "just a string\n", "42\n", "~\n", "", "   \n", "# only a comment\n"],
    ids=["list", "string", "number", "null", "empty", "blank", "comment"],
)
def test_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (1, 1)
    assert "must be a YAML mapping" in issue.message


def test_non_utf8_bytes(tmp_path: Path) -> None:
    raw = SOURCE.encode("utf-8").replace(b"Customer-facing", b"Customer\xff\xfefacing")
    issue = only_issue(write(tmp_path, raw))
    assert issue.message == "file is not UTF-8 text"


def test_missing_file(tmp_path: Path) -> None:
    issue = only_issue(tmp_path / "nope.yaml")
    assert issue.file == str(tmp_path / "nope.yaml")
    assert issue.message.startswith("cannot read the file:")
    assert "No such file" in issue.message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    issue = only_issue(tmp_path)
    assert issue.message.startswith("cannot read the file:")


def test_file_over_the_size_limit(tmp_path: Path) -> None:
    padding = "#" * (fleetfile.MAX_FLEET_BYTES - len(SOURCE.encode()) + 10) + "\n"
    issue = only_issue(write(tmp_path, SOURCE + padding))
    assert issue.message == f"file is larger than {fleetfile.MAX_FLEET_BYTES} bytes"


def test_file_exactly_at_the_size_limit_loads(tmp_path: Path) -> None:
    head = SOURCE + "\n"
    room = fleetfile.MAX_FLEET_BYTES - len(head.encode()) - 1
    path = write(tmp_path, head + "#" * room + "\n")
    assert path.stat().st_size == fleetfile.MAX_FLEET_BYTES
    assert load_fleet(path).name == "support-desk"


def test_loader_fields_cannot_be_set_from_the_file(tmp_path: Path) -> None:
    text = SOURCE + "\nstate_dir: /somewhere/else\n"
    issue = only_issue(write(tmp_path, text))
    assert where(issue) == (line_of(text, "state_dir: /somewhere/else"), 1)
    assert issue.message.startswith("state_dir: unknown key")


# ------------------------------------------------------------------------------------ many problems


def test_all_schema_errors_are_reported(tmp_path: Path) -> None:
    text = edit(SOURCE, "  port: 8000\n", "  port: 0\n")
    text = edit(text, "    max_steps: 6\n", "    max_step: 6\n")
    text = edit(text, "    identity: svc-orders@acme\n", "")
    text = edit(text, "    timeout_s: 5\n", "    timeout_s: -1\n")
    fleet, issues = check_fleet_file(write(tmp_path, text))

    assert fleet is None
    assert {where(i) for i in issues} == {
        (line_of(text, "port: 0"), column_of(text, "port: 0", "0")),
        (line_of(text, "max_step: 6"), 5),
        (agent_body_line(text, "orders"), 5),
        (line_of(text, "timeout_s: -1"), column_of(text, "timeout_s: -1", "-1")),
    }
    messages = " | ".join(i.message for i in issues)
    for path in (
        "server.port",
        "agents.support.max_step",
        "agents.orders.identity",
        "tools.lookup_order.timeout_s",
    ):
        assert path in messages


def test_all_reference_errors_are_reported(tmp_path: Path) -> None:
    text = edit(SOURCE, "tools: [lookup_order]", "tools: [lookup_ordr]")
    text = edit(text, "prompt: refunds@1", "prompt: refunds@7")
    text = edit(text, "    agent: orders\n", "    agent: ordrs\n")
    fleet, issues = check_fleet_file(write(tmp_path, text))

    assert fleet is None
    assert sorted(i.message for i in issues) == [
        "agents.orders.tools.0: unknown tool 'lookup_ordr'",
        "agents.refunds.prompt: prompt 'refunds' has no version '7' (known: 1)",
        "tools.ask_orders.agent: unknown agent 'ordrs'",
    ]
    assert {i.line for i in issues} == {
        line_of(text, "[lookup_ordr]"),
        line_of(text, "refunds@7"),
        line_of(text, "agent: ordrs"),
    }


def test_duplicate_keys_are_reported_beside_schema_errors(tmp_path: Path) -> None:
    text = edit(SOURCE, "    max_steps: 6\n", "    max_steps: 6\n    max_steps: 7\n")
    text = edit(text, "  port: 8000\n", "  port: eighty\n")
    fleet, issues = check_fleet_file(write(tmp_path, text))
    assert fleet is None
    assert {where(i) for i in issues} == {
        (line_of(text, "max_steps: 7"), 5),
        (line_of(text, "port: eighty"), column_of(text, "port: eighty", "eighty")),
    }


def test_load_fleet_raises_with_every_issue(tmp_path: Path) -> None:
    text = edit(SOURCE, "tools: [lookup_order]", "tools: [lookup_ordr]")
    text = edit(text, "prompt: refunds@1", "prompt: refunds@7")
    path = write(tmp_path, text)

    with pytest.raises(FleetFileError) as caught:
        load_fleet(path)

    err = caught.value
    assert isinstance(err, ConfigError)
    assert len(err.issues) == 2
    assert err.detail.startswith("2 problem(s) in the fleet file; first: ")
    assert str(err.issues[0]) in err.detail
    assert all(i.file == str(path) for i in err.issues)


def test_fleet_file_error_survives_pickling(tmp_path: Path) -> None:
    path = write(tmp_path, edit(SOURCE, "tools: [lookup_order]", "tools: [lookup_ordr]"))
    with pytest.raises(FleetFileError) as caught:
        load_fleet(path)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is FleetFileError
    assert copy.issues == caught.value.issues
    assert copy.detail == caught.value.detail


# ------------------------------------------------------------------------------------- robustness


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_garbage_is_reported_never_raised(tmp_path: Path, data: bytes | str) -> None:
    path = write(tmp_path, data, name="garbage.yaml")
    fleet, issues = check_fleet_file(path)
    # Garbage can never be a fleet (no models, no agents): it must come back as located issues.
    assert fleet is None
    assert issues
    assert all(i.file == str(path) and i.line >= 0 and i.column >= 0 and i.message for i in issues)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(SOURCE.splitlines())))
def test_truncated_example_is_reported_never_raised(tmp_path: Path, cut: int) -> None:
    text = "\n".join(SOURCE.splitlines()[:cut]) + "\n"
    path = write(tmp_path, text, name="cut.yaml")
    fleet, issues = check_fleet_file(path)
    assert (fleet is None) == bool(issues)
    for issue in issues:
        assert 0 <= issue.line <= cut + 1
