"""The benchmark harness (benchmarks/run.py): how its steady-state runs are ordered and summed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    """benchmarks/run.py, which is a script, not part of the package."""
    path = Path(__file__).parent.parent / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("benchmarks_run", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runs_are_interleaved_each_client_going_first_in_alternate_rounds(
    harness: ModuleType,
) -> None:
    """Rounds run SDK, raw, raw, SDK, SDK, raw ...: a drift in load falls on both alike."""
    order = harness.interleaved_order(4)
    assert [client for _, client in order] == ["sdk", "raw", "raw", "sdk"] * 2
    assert [number for number, _ in order] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_the_spread_reports_median_range_and_interquartile_range(harness: ModuleType) -> None:
    """Five runs give their median, their extremes and the quartiles between them."""
    stats = harness.spread([130.0, 100.0, 120.0, 110.0, 200.0])
    assert stats == {"median": 120.0, "min": 100.0, "max": 200.0, "q1": 110.0, "q3": 130.0}


def test_every_steady_kind_has_an_sdk_and_a_raw_worker(harness: ModuleType) -> None:
    """The mix, polls and creates rows each compare two workers of the same workload."""
    for kind, _, _ in harness.STEADY_PLAN:
        assert {f"sdk_{kind}", f"raw_{kind}"} <= set(harness.WORKERS)
