"""Seeded fault plans: deterministic per run id, the configured share of runs, and each kill fires once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from raygent.core.config import FAULT_POINTS, FaultSpec
from raygent.core.faults import FaultHook, plan_for


def spec(**kw: object) -> FaultSpec:
    return FaultSpec(**{"seed": 3, "kill_ratio": 0.5, "points": list(FAULT_POINTS), "max_step": 4, **kw})  # type: ignore[arg-type]


def test_plans_are_deterministic_and_spread() -> None:
    plans = [plan_for(spec(), f"run_{n}") for n in range(2000)]
    assert plans == [plan_for(spec(), f"run_{n}") for n in range(2000)]
    killed = [p for p in plans if p is not None]
    assert 900 < len(killed) < 1100  # about kill_ratio of the runs
    assert set(Counter(p[0] for p in killed)) == set(FAULT_POINTS)
    assert {p[1] for p in killed} == {1, 2, 3, 4}
    assert plans != [plan_for(spec(seed=4), f"run_{n}") for n in range(2000)]
    assert all(plan_for(spec(kill_ratio=0.0), f"run_{n}") is None for n in range(200))


def test_a_kill_fires_once_at_its_point(tmp_path: Path) -> None:
    fired: list[str] = []
    hook = FaultHook(spec(kill_ratio=1.0), tmp_path, kill=lambda: fired.append("kill"))
    run_id = "run_x"
    point, step = plan_for(spec(kill_ratio=1.0), run_id) or ("", 0)
    hook.at("after_model" if point != "after_model" else "after_tool", run_id=run_id, step=step)
    hook.at(point, run_id=run_id, step=step + 1)
    assert fired == []
    hook.at(point, run_id=run_id, step=step)
    # A restarted process meets the same point again when it resumes: the marker stops a second kill.
    FaultHook(spec(kill_ratio=1.0), tmp_path, kill=lambda: fired.append("again")).at(
        point, run_id=run_id, step=step
    )
    assert fired == ["kill"]


def test_fault_spec_is_validated() -> None:
    with pytest.raises(ValidationError):
        FaultSpec(seed=1, kill_ratio=1.5, points=["after_model"])
    with pytest.raises(ValidationError):
        FaultSpec(seed=1, kill_ratio=0.5, points=["before_lunch"])  # type: ignore[list-item]
    assert FaultHook.for_fleet(None, Path(".")) is None
