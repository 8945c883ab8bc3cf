"""Every raygent error crosses Ray processes (pickle) intact and renders as an RFC 9457 problem."""

from __future__ import annotations

import copy
import pickle

import pytest

from raygent.core import errors
from raygent.core.errors import ConfigError, RaygentError
from raygent.core.fleetfile import FleetFileError, LocatedIssue

ERROR_CLASSES: list[type[RaygentError]] = [getattr(errors, name) for name in errors.__all__]

# The documented tree (the module docstring and DESIGN §3): status, and whether a retry may succeed.
EXPECTED: dict[str, tuple[int, bool]] = {
    "RaygentError": (500, False),
    "ConfigError": (400, False),
    "BadRequestError": (400, False),
    "UnauthorizedError": (401, False),
    "ForbiddenError": (403, False),
    "NotFoundError": (404, False),
    "ConflictError": (409, True),
    "PayloadTooLargeError": (413, False),
    "ValidationFailedError": (422, False),
    "BudgetExceededError": (429, True),
    "RateLimitedError": (429, True),
    "OverloadedError": (503, True),
    "DeadlineExceededError": (504, False),
    "StoreError": (500, True),
    "ModelError": (502, False),
    "ToolError": (502, False),
    "AgentError": (500, False),
}

by_name = pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)


def test_all_lists_exactly_the_documented_errors() -> None:
    assert sorted(errors.__all__) == sorted(EXPECTED)


@by_name
def test_is_a_raygent_error(cls: type[RaygentError]) -> None:
    assert issubclass(cls, RaygentError)
    assert issubclass(cls, Exception)


@by_name
def test_status_and_default_retryable(cls: type[RaygentError]) -> None:
    status, retryable = EXPECTED[cls.__name__]
    assert cls.status == status
    assert cls("x").retryable is retryable


def test_slugs_are_unique() -> None:
    slugs = [cls.slug for cls in ERROR_CLASSES]
    assert len(slugs) == len(set(slugs))


@by_name
@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickles_with_every_field(cls: type[RaygentError], protocol: int) -> None:
    err = cls(
        "the order service timed out",
        retryable=not cls.default_retryable,  # the opposite of the default, so it cannot come from it
        retry_after_s=2.5,
        extra={"run_id": "run_123", "limits": {"usd": 1.5}},
    )
    back = pickle.loads(pickle.dumps(err, protocol=protocol))

    assert type(back) is cls
    assert back.detail == "the order service timed out"
    assert back.retryable is (not cls.default_retryable)
    assert back.retry_after_s == 2.5
    assert back.extra == {"run_id": "run_123", "limits": {"usd": 1.5}}
    assert str(back) == str(err) == "the order service timed out"
    assert back.args == err.args
    assert back.to_problem() == err.to_problem()


@by_name
def test_pickles_with_defaults(cls: type[RaygentError]) -> None:
    back = pickle.loads(pickle.dumps(cls("plain")))
    assert (back.detail, back.retryable, back.retry_after_s, back.extra) == (
        "plain",
        cls.default_retryable,
        None,
        {},
    )


@by_name
def test_deepcopy(cls: type[RaygentError]) -> None:
    err = cls("d", extra={"k": [1, 2]})
    dup = copy.deepcopy(err)
    assert type(dup) is cls
    assert dup.extra == {"k": [1, 2]}
    assert dup.extra is not err.extra


def test_extra_is_copied_not_shared() -> None:
    extra = {"a": 1}
    err = RaygentError("x", extra=extra)
    extra["a"] = 2
    assert err.extra == {"a": 1}


@by_name
def test_to_problem_has_rfc9457_members(cls: type[RaygentError]) -> None:
    doc = cls("something specific went wrong").to_problem()
    assert doc == {
        "type": f"https://raygent.dev/problems/{cls.slug}",
        "title": cls.title,
        "status": cls.status,
        "detail": "something specific went wrong",
    }
    assert cls.title and cls.title[0].isupper()


def test_to_problem_optional_members() -> None:
    err = errors.OverloadedError("queue is full", retry_after_s=3.0, extra={"queued": 1024})
    doc = err.to_problem(instance="/v1/agents/support/runs")
    assert doc["instance"] == "/v1/agents/support/runs"
    assert doc["retry_after_s"] == 3.0
    assert doc["queued"] == 1024
    assert doc["status"] == 503
    assert "instance" not in err.to_problem()


def test_extra_cannot_replace_standard_members() -> None:
    err = errors.NotFoundError("no such run", extra={"status": 200, "type": "about:blank", "run_id": "r1"})
    doc = err.to_problem()
    assert doc["status"] == 404
    assert doc["type"] == "https://raygent.dev/problems/not-found"
    assert doc["run_id"] == "r1"


def test_can_be_raised_and_caught_by_base() -> None:
    with pytest.raises(RaygentError) as caught:
        raise errors.BudgetExceededError("daily budget of agent support is spent", retry_after_s=60)
    assert caught.value.status == 429
    assert caught.value.retryable is True


# -------------------------------------------------------------------------------- FleetFileError


def test_fleet_file_error_pickles_with_its_issues() -> None:
    issues = [
        LocatedIssue("fleet.yaml", 12, 5, "agents.support.max_step: unknown key"),
        LocatedIssue("fleet.yaml", 40, 13, "agents.orders.tools.0: unknown tool 'x'"),
    ]
    err = FleetFileError("2 problem(s) in the fleet file", issues=issues, extra={"file": "fleet.yaml"})
    back = pickle.loads(pickle.dumps(err))

    assert type(back) is FleetFileError
    assert isinstance(back, ConfigError)
    assert back.issues == issues
    assert back.detail == "2 problem(s) in the fleet file"
    assert back.extra == {"file": "fleet.yaml"}
    assert back.retryable is False
    assert back.to_problem()["status"] == 400
    assert back.to_problem()["type"].endswith("/invalid-config")


def test_fleet_file_error_issues_are_its_own_list() -> None:
    issues = [LocatedIssue("f.yaml", 1, 1, "m")]
    err = FleetFileError("d", issues=issues)
    issues.append(LocatedIssue("f.yaml", 2, 1, "n"))
    assert len(err.issues) == 1
    assert FleetFileError("d").issues == []
