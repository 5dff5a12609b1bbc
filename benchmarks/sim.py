"""Simulate the SDK's poll schedule on virtual time: requests per task and detection latency.

A discrete-event simulation (one heap of due times, no sockets, no event loop) of many
tasks created against a server whose tasks take as long as the emulator's, or longer-tailed
variants, with a token-bucket rate limit answering 429 + Retry-After and outages answering
503. The SDK client makes its decisions with the SDK's own code: `PollPolicy`,
`RetryPolicy.backoff` and the cadence functions the poller calls (`first_delay`,
`next_delay`, `learn` in `worldrouter_async._cadence`). Fixed-interval loops are the
baseline, and for each workload the interval whose p95 detection latency equals the SDK's
is found, so requests compare at equal p95. See benchmarks/README.md.

    python benchmarks/sim.py                      # the standard workloads, 100,000 tasks
    python benchmarks/sim.py --tasks 1000000 --workloads stream
"""

from __future__ import annotations

import argparse
import bisect
import functools
import heapq
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from attrs import define, field

from worldrouter_async import PollPolicy, RetryPolicy
from worldrouter_async._cadence import Cohort, first_delay, learn, next_delay, poll_failed
from worldrouter_async.testing._emulator import MODEL_TIMINGS

MODEL: Final = "gpt-image-2"
SIGMA: Final = 0.3
"""The emulator's spread: run time is lognormal around the model's median, sigma 0.3."""


# --- the server: durations, a token bucket, outages -----------------------------------------


Sampler = Callable[[random.Random], float]


def emulator_duration(model: str, sigma: float = SIGMA) -> Sampler:
    """A task's duration as the emulator draws it: a uniform queue time, a lognormal run."""
    queue_s, run_s = MODEL_TIMINGS[model]
    mu = math.log(run_s)
    return lambda rng: rng.uniform(0.5, 1.5) * queue_s + rng.lognormvariate(mu, sigma)


def with_stragglers(base: Sampler, share: float, slowdown: float) -> Sampler:
    """`base`, except that `share` of the tasks take `slowdown` times as long."""
    return lambda rng: base(rng) * (slowdown if rng.random() < share else 1.0)


@define
class Server:
    """What the simulated server answers: a token bucket (429) and outage windows (503)."""

    rate: float | None = None
    burst: float = 10.0
    outages: tuple[tuple[float, float], ...] = ()
    tokens: float = 0.0
    updated: float = 0.0
    rejected: int = 0
    failed: int = 0

    def __attrs_post_init__(self) -> None:
        self.tokens = self.burst

    def answer(self, now: float) -> float:
        """0.0 if the request is served; the Retry-After of a 429; -1.0 for a 503."""
        if self.rate is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens < 1.0:
                self.rejected += 1
                return (1.0 - self.tokens) / self.rate
            self.tokens -= 1.0
        for start, end in self.outages:
            if start <= now < end:
                self.failed += 1
                return -1.0
        return 0.0


@define(frozen=True)
class Workload:
    """Who creates tasks when, how long they take, and how the server behaves."""

    name: str
    models: dict[str, Sampler]
    window: Callable[[int], float] = lambda tasks: 0.0
    rate: Callable[[int], float | None] = lambda tasks: None
    outages: Callable[[int], tuple[tuple[float, float], ...]] = lambda tasks: ()

    def arrivals(self, tasks: int, rng: random.Random) -> Iterator[tuple[float, str, float]]:
        """(arrival time, model, duration) of every task, evenly spread over the window."""
        window = self.window(tasks)
        names = sorted(self.models)
        for index in range(tasks):
            model = names[index % len(names)]
            yield window * index / tasks, model, self.models[model](rng)

    def server(self, tasks: int) -> Server:
        """A fresh server for one run."""
        return Server(rate=self.rate(tasks), outages=self.outages(tasks))

    @property
    def has_faults(self) -> bool:
        """Whether requests can fail (so fixed loops need the event simulation)."""
        return self.rate(1) is not None or bool(self.outages(1))


def _stream_window(tasks: int) -> float:
    """As the real benchmark: at least 100 s, at most 100 arrivals a second."""
    return max(100.0, tasks / 100)


def _tight_rate(tasks: int) -> float:
    """Four requests per task over the arrival window: less than a stream asks for."""
    return 4 * tasks / _stream_window(tasks)


def _middle_outage(tasks: int) -> tuple[tuple[float, float], ...]:
    """One 60 s outage starting a third of the way through the arrivals."""
    start = _stream_window(tasks) / 3
    return ((start, start + 60.0),)


_ONE = {MODEL: emulator_duration(MODEL)}
WORKLOADS: Final[dict[str, Workload]] = {
    w.name: w
    for w in (
        Workload("stream", _ONE, _stream_window),
        Workload("burst", _ONE),
        Workload("mixed", {m: emulator_duration(m) for m in MODEL_TIMINGS}, _stream_window),
        Workload("heavy", {MODEL: emulator_duration(MODEL, sigma=0.6)}, _stream_window),
        Workload(
            "stragglers",
            {MODEL: with_stragglers(emulator_duration(MODEL), 0.05, 4.0)},
            _stream_window,
        ),
        Workload("heavy-burst", {MODEL: emulator_duration(MODEL, sigma=0.6)}),
        Workload("rate-limited", _ONE, _stream_window, rate=_tight_rate),
        Workload("outage", _ONE, _stream_window, outages=_middle_outage),
    )
}


# --- the clients -----------------------------------------------------------------------------


class SimTask:
    """One simulated task, with the attributes the cadence reads (`_cadence.Scheduled`)."""

    __slots__ = (
        "accepted",
        "active",
        "cohort",
        "created",
        "due",
        "errors",
        "finish",
        "latency",
        "paced",
        "polls",
        "probe",
        "requests",
        "seen",
    )

    def __init__(self, arrival: float, duration: float, cohort: Cohort[SimTask] | None) -> None:
        self.accepted = False
        self.created: float | None = None
        self.seen = arrival
        self.polls = 0
        self.probe = False
        self.active = True
        self.cohort = cohort
        self.due = arrival
        self.errors = 0
        self.finish = duration  # a duration until the create succeeds, then a time
        self.latency = math.nan
        self.requests = 0
        self.paced = False


@define(frozen=True)
class Client:
    """A polling strategy: the SDK with a policy (`sdk`, `legacy`) or a fixed interval."""

    name: str
    policy: PollPolicy | None = None
    interval: float = 0.0
    legacy: bool = False
    retry: RetryPolicy = field(factory=RetryPolicy)


@define
class Outcome:
    """What one simulated run measured."""

    workload: str
    client: str
    tasks: int
    requests: int
    rejected: int
    failed_requests: int
    latencies: list[float]
    mean_duration: float
    seconds: float = 0.0
    cohorts: dict[str, Cohort[SimTask]] = field(factory=dict)

    def row(self) -> dict[str, Any]:
        """The reported figures: requests per task and detection latency percentiles."""
        lat = self.latencies
        mean = statistics.fmean(lat)
        return {
            "workload": self.workload,
            "client": self.client,
            "tasks": self.tasks,
            "requests_per_task": self.requests / self.tasks,
            "mean_s": mean,
            "mean_pct": 100 * mean / self.mean_duration,
            "p50_s": lat[len(lat) // 2],
            "p95_s": p95(lat),
            "max_s": lat[-1],
            "rejected_429": self.rejected,
            "failed_503": self.failed_requests,
        }


def p95(sorted_latencies: list[float]) -> float:
    """The 95th percentile, as benchmarks/run.py takes it."""
    return sorted_latencies[int(0.95 * (len(sorted_latencies) - 1))]


def simulate(workload: Workload, client: Client, tasks: int, seed: int) -> Outcome:
    """Run `tasks` tasks of `workload` under `client` on virtual time."""
    started = time.perf_counter()
    rng = random.Random(seed)
    random.seed(seed)  # PollPolicy and RetryPolicy jitter with the global generator
    server = workload.server(tasks)
    policy = client.policy
    learns = policy is not None and policy.adaptive
    cohorts: dict[str, Cohort[SimTask]] = {}
    heap: list[tuple[float, int, SimTask]] = []
    seq = 0
    total_duration = 0.0
    entries: list[SimTask] = []
    for arrival, model, duration in workload.arrivals(tasks, rng):
        cohort = cohorts.setdefault(model, Cohort()) if learns else None
        task = SimTask(arrival, duration, cohort)
        entries.append(task)
        total_duration += duration
        seq += 1
        heap.append((arrival, seq, task))
    heapq.heapify(heap)

    def schedule(task: SimTask, due: float) -> None:
        nonlocal seq
        task.due = due
        seq += 1
        heapq.heappush(heap, (due, seq, task))

    # The SDK's throttle, simplified: after a 429 every request waits out its Retry-After,
    # then requests are paced at 95% of the server's rate (the real one learns that rate
    # from what the server granted). Fixed loops retry each request on its own, after the
    # whole-second Retry-After plus up to as much again of random spread.
    paused_until = pace = next_slot = 0.0
    while heap:
        now, _, task = heapq.heappop(heap)
        if not task.active or now != task.due:
            continue  # stale: rescheduled since, like the poller's heap
        if policy is not None and not task.paced:
            slot = max(now, paused_until, next_slot)
            next_slot = slot + pace
            if slot > now:
                task.paced = True  # its slot is reserved: it goes out when due
                schedule(task, slot)
                continue
        task.paced = False
        task.requests += 1
        answer = server.answer(now)
        if answer != 0.0:
            task.errors += 1
            if task.accepted and not client.legacy:
                poll_failed(task)
            if answer > 0.0 and policy is not None:
                paused_until = max(paused_until, now + answer)
                pace = 1.0 / (0.95 * (server.rate or 1.0))
                schedule(task, paused_until)
            elif answer > 0.0:  # Retry-After in whole seconds, as the emulator sends it
                schedule(task, now + math.ceil(answer) * (1.0 + rng.random()))
            elif policy is None:
                schedule(task, now + client.interval)
            else:  # as the poller's _on_poll_error
                backoff = client.retry.backoff(task.errors)
                schedule(task, now + max(backoff, policy.interval(task.polls)))
            continue
        task.errors = 0
        if not task.accepted:  # the create succeeded
            task.accepted = True
            task.created = task.seen = now
            task.finish += now
            if policy is None:
                schedule(task, now + client.interval)
            elif client.legacy:
                schedule(task, now + _legacy_first_delay(policy, task.cohort, task))
            else:
                schedule(task, now + first_delay(policy, task.cohort, task))
            continue
        if now >= task.finish:
            task.latency = now - task.finish
            task.active = False
            if task.probe and task.cohort is not None:
                task.cohort.probes -= 1
            if client.legacy:
                _legacy_learn(task.cohort, task, now, schedule)
            elif learns:
                learn(task.cohort, task, now, completed=True, schedule=schedule)
        elif policy is None:
            schedule(task, now + client.interval)
        elif client.legacy:
            task.polls += 1
            schedule(task, now + policy.interval(task.polls))
        else:
            schedule(task, now + next_delay(policy, task.cohort, task, now))
    return Outcome(
        workload=workload.name,
        client=client.name,
        tasks=tasks,
        requests=sum(t.requests for t in entries),
        rejected=server.rejected,
        failed_requests=server.failed,
        latencies=sorted(t.latency for t in entries),
        mean_duration=total_duration / tasks,
        seconds=time.perf_counter() - started,
        cohorts=cohorts,
    )


# v0.1's decisions, kept to compare with: first poll at 90% of the fastest tenth, the
# detection time recorded as the duration, then the policy's growing interval.
_V01_LEAD: Final = 0.9


def _legacy_first_delay(policy: PollPolicy, cohort: Cohort[SimTask] | None, task: SimTask) -> float:
    """v0.1's first poll."""
    if cohort is not None and len(cohort.durations) >= policy.min_samples:
        return max(policy.interval(0), _V01_LEAD * cohort.durations.quantile(0.1))
    return first_delay(policy, cohort, task)  # probes and parking are unchanged


def _legacy_learn(
    cohort: Cohort[SimTask] | None,
    task: SimTask,
    now: float,
    schedule: Callable[[SimTask, float], None],
) -> None:
    """v0.1's learning: the detection time is the duration; parked tasks released at 90%."""
    if cohort is None or task.created is None:
        return
    cohort.durations.add(now - task.created)
    parked, cohort.parked = cohort.parked, []
    learned = cohort.durations.quantile(0.1)
    for waiting in parked:
        if waiting.active and waiting.created is not None:
            schedule(waiting, max(now, waiting.created + _V01_LEAD * learned))


def fixed_interval(workload: Workload, interval: float, tasks: int, seed: int) -> Outcome:
    """A fixed-interval loop without faults, in closed form: the same result as `simulate`.

    A task of duration d created at time c is polled at c + T, c + 2T, ... and detected at
    the first poll at or after its finish: ceil(d / T) polls, ceil(d / T) * T - d late.
    """
    durations = _durations(workload.name, tasks, seed)
    polls = [max(1, math.ceil(duration / interval)) for duration in durations]
    latencies = sorted([n * interval - d for n, d in zip(polls, durations, strict=True)])
    return Outcome(
        workload.name,
        f"fixed {interval:.3g} s",
        tasks,
        tasks + sum(polls),
        0,
        0,
        latencies,
        sum(durations) / tasks,
    )


@functools.lru_cache(maxsize=4)
def _durations(workload: str, tasks: int, seed: int) -> list[float]:
    """The durations `simulate` draws for the same workload, count and seed."""
    arrivals = WORKLOADS[workload].arrivals(tasks, random.Random(seed))
    return [duration for _, _, duration in arrivals]


def equal_p95(workload: Workload, target: float, tasks: int, seed: int) -> Outcome:
    """The fixed-interval loop whose p95 detection latency equals `target` (bisection)."""
    low, high = target / 2, target * 4
    for _ in range(30):
        middle = (low + high) / 2
        if p95(fixed_interval(workload, middle, tasks, seed).latencies) < target:
            low = middle
        else:
            high = middle
    return fixed_interval(workload, (low + high) / 2, tasks, seed)


def frontier(workload: Workload, tasks: int, seed: int) -> list[dict[str, Any]]:
    """The fewest requests any schedule can send for a mean detection latency (a bound).

    With the durations known exactly (as no client knows them), dynamic programming over a
    time grid finds, for each price of a second of latency in polls, the poll times that
    minimise polls + price x latency. Each row is one point of the best trade-off; a policy
    that learns durations from its own tasks can only do worse.
    """
    durations = sorted(_durations(workload.name, tasks, seed))
    horizon = durations[int(0.999 * (tasks - 1))]
    steps = 600
    step = horizon / steps
    done = [bisect.bisect_right(durations, i * step) / tasks for i in range(steps + 1)]
    area = [0.0] * (steps + 1)  # integral of the finished share from 0 to each grid time
    for i in range(1, steps + 1):
        area[i] = area[i - 1] + (done[i - 1] + done[i]) / 2 * step
    mean = statistics.fmean(durations)
    rows = []
    for price in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
        weight = price / mean * 25  # polls per second of latency, for 25 s tasks
        cost = [0.0] * (steps + 1)
        after = [steps] * (steps + 1)
        for i in range(steps - 1, -1, -1):
            best = math.inf
            for j in range(i + 1, min(steps, i + steps // 2) + 1):
                late = area[j] - area[i] - done[i] * (j - i) * step
                total = (1.0 - done[i]) + weight * late + cost[j]
                if total < best:
                    best, after[i] = total, j
            cost[i] = best
        polls, late, at = 0.0, 0.0, 0
        while at < steps:
            then = after[at]
            polls += 1.0 - done[at]
            late += area[then] - area[at] - done[at] * (then - at) * step
            at = then
        rows.append(
            {
                "workload": workload.name,
                "client": f"optimum, first poll at {after[0] * step:.1f} s",
                "tasks": tasks,
                "requests_per_task": 1.0 + polls,
                "mean_s": late,
                "mean_pct": 100 * late / mean,
            }
        )
    return rows


# --- the report ------------------------------------------------------------------------------

COLUMNS: Final = (
    "workload",
    "client",
    "tasks",
    "requests_per_task",
    "mean_s",
    "mean_pct",
    "p50_s",
    "p95_s",
    "max_s",
    "rejected_429",
    "failed_503",
    "vs_fixed_at_equal_p95",
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of `rows`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def clients(names: list[str], intervals: list[float]) -> list[Client]:
    """The SDK's clients by name, then one fixed loop per interval."""
    policy = PollPolicy()
    known = {
        "sdk": Client("sdk", policy),
        "legacy": Client("sdk v0.1", policy, legacy=True),
        "non-adaptive": Client("sdk adaptive=False", PollPolicy(adaptive=False)),
    }
    return [known[n] for n in names] + [Client(f"fixed {t:g} s", interval=t) for t in intervals]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every requested workload under every requested client, plus equal-p95 baselines."""
    rows = []
    for name in args.workloads:
        workload = WORKLOADS[name]
        if args.frontier:
            rows += frontier(workload, args.tasks, args.seed)
        for client in clients(args.clients, args.intervals):
            outcome = simulate(workload, client, args.tasks, args.seed)
            row = outcome.row()
            if client.policy is not None and not workload.has_faults:
                fixed = equal_p95(workload, row["p95_s"], args.tasks, args.seed).row()
                row["vs_fixed_at_equal_p95"] = (
                    f"{row['requests_per_task'] / fixed['requests_per_task']:.2f}x "
                    f"({fixed['client']}: {fixed['requests_per_task']:.2f})"
                )
            rows.append(row)
            print(
                f"{name} {client.name}: {outcome.seconds:.1f} s for {args.tasks:,} tasks",
                file=sys.stderr,
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument(
        "--workloads", nargs="+", choices=sorted(WORKLOADS), default=sorted(WORKLOADS)
    )
    parser.add_argument(
        "--clients",
        nargs="*",
        choices=["sdk", "legacy", "non-adaptive"],
        default=["sdk", "legacy", "non-adaptive"],
    )
    parser.add_argument(
        "--intervals",
        type=float,
        nargs="*",
        default=[2.0, 4.0, 6.0],
        help="fixed-interval loops to run beside the SDK (seconds)",
    )
    parser.add_argument(
        "--frontier",
        action="store_true",
        help="also print the best trade-off any schedule could reach, knowing the durations",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(table(run(args)))


if __name__ == "__main__":
    main()
