"""Shared fixtures. Unit tests get an in-process fleet; integration tests get one local Ray + Serve."""

from __future__ import annotations

import os

# Must be set before Ray is imported anywhere in the test process: keeps Ray's node on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import settings
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from raygent.actors.inprocess import InProcessFleet
from raygent.core.clock import SystemClock
from raygent.core.config import Fleet
from raygent.core.fleetfile import load_fleet
from raygent.core.store import SQLiteStore, open_store

# No per-example time limit for property tests: a limit is a timed assertion, and on a busy 2-core CI
# machine a correct example can take longer than Hypothesis' default 200 ms.
settings.register_profile("raygent", deadline=None)
settings.load_profile("raygent")

REPO = Path(__file__).resolve().parent.parent


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Why each rerun test failed the first time: a rerun that passes leaves only the test's name, and a
    rare failure is only ever seen in a CI log."""
    for report in terminalreporter.stats.get("rerun", []):
        terminalreporter.write_line(f"first try of {report.nodeid} failed:", bold=True)
        terminalreporter.write_line(report.longreprtext[-4000:])


EXAMPLE_FLEET = REPO / "examples" / "support_desk" / "fleet.yaml"


@pytest.fixture
def example_fleet(tmp_path: Path) -> Fleet:
    return load_fleet(EXAMPLE_FLEET, state_dir=tmp_path / "state")


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


@pytest.fixture
async def store(example_fleet: Fleet) -> AsyncIterator[SQLiteStore]:
    opened = open_store(example_fleet)
    assert isinstance(opened, SQLiteStore)
    yield opened
    await opened.close()


@pytest.fixture
async def inproc(
    example_fleet: Fleet, store: SQLiteStore, tracer_provider: TracerProvider
) -> AsyncIterator[InProcessFleet]:
    fleet = InProcessFleet(
        example_fleet, store=store, tracer=tracer_provider.get_tracer("test"), clock=SystemClock()
    )
    yield fleet
    await fleet.aclose()
