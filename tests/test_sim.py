"""The poll-schedule simulator (benchmarks/sim.py): faithful baselines, and the default's gain."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from worldrouter_async import PollPolicy


def _load_sim() -> ModuleType:
    """benchmarks/sim.py, which is a script, not part of the package."""
    path = Path(__file__).parent.parent / "benchmarks" / "sim.py"
    spec = importlib.util.spec_from_file_location("benchmarks_sim", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


sim = _load_sim()


@pytest.mark.parametrize("workload", ["stream", "burst"])
def test_closed_form_fixed_loop_matches_the_event_simulation(workload: str) -> None:
    """The equal-p95 search's closed form gives the event loop's exact requests and delays."""
    closed = sim.fixed_interval(sim.WORKLOADS[workload], 3.0, 500, 7)
    simulated = sim.simulate(sim.WORKLOADS[workload], sim.Client("fixed", interval=3.0), 500, 7)
    assert closed.requests == simulated.requests
    assert closed.latencies == pytest.approx(simulated.latencies)


def test_default_policy_beats_a_fixed_loop_at_equal_p95_on_a_stream() -> None:
    """On the emulator's durations, the default sends under 0.7x a fixed loop's requests."""
    workload = sim.WORKLOADS["stream"]
    sdk = sim.simulate(workload, sim.Client("sdk", PollPolicy()), 3000, 1).row()
    fixed = sim.equal_p95(workload, sdk["p95_s"], 3000, 1).row()
    assert fixed["p95_s"] == pytest.approx(sdk["p95_s"], rel=0.01)
    assert sdk["requests_per_task"] < 0.7 * fixed["requests_per_task"]
    assert sdk["mean_pct"] < 10.0


def test_a_rate_limited_stream_gets_429s_and_still_finishes_every_task() -> None:
    """The token bucket answers 429s; the SDK waits them out and detects every task."""
    outcome = sim.simulate(sim.WORKLOADS["rate-limited"], sim.Client("sdk", PollPolicy()), 5000, 1)
    assert outcome.rejected > 0
    assert all(latency >= 0.0 for latency in outcome.latencies)
    assert len(outcome.latencies) == 5000


def test_an_outage_delays_detection_without_spoiling_what_was_learned() -> None:
    """Polls fail for 60 s; afterwards detection is prompter than v0.1's, which learned
    durations stretched by the outage."""
    workload = sim.WORKLOADS["outage"]
    sdk = sim.simulate(workload, sim.Client("sdk", PollPolicy()), 5000, 1)
    v01 = sim.simulate(workload, sim.Client("v0.1", PollPolicy(), legacy=True), 5000, 1)
    assert sdk.failed_requests > 0
    assert sdk.latencies[-1] > 30.0
    assert sdk.row()["mean_s"] < 0.75 * v01.row()["mean_s"]
