"""Fixtures of the batch tests (helpers live in batch_helpers.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from batch_helpers import EXAMPLE_DIR

from raygent.batch.client import BatchClient
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet


@pytest.fixture
def write_input(tmp_path: Path) -> Callable[[list[str]], Path]:
    def write(lines: list[str]) -> Path:
        path = tmp_path / "input.jsonl"
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture
def client(example_fleet: Fleet) -> BatchClient:
    return BatchClient(
        example_fleet, EXAMPLE_DIR / "fleet.yaml", clock=SystemClock(), address="http://127.0.0.1:9"
    )
