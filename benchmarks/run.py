"""Benchmark harness: this SDK against a naive loop, openai-python and a raw aiohttp floor.

Each measurement runs in its own worker process against a fresh emulator process, so CPU
time and peak RSS belong to the client alone. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

HEADERS = {"Authorization": "Bearer test-key"}
MODEL = "gpt-image-2"


# --- workers (each runs in its own process and prints one JSON line) ----------------------


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def worker_sdk(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The SDK: submit_many, one poller, handles resolved through done-callbacks."""
    import worldrouter_async as wr

    resolved: dict[str, float] = {}
    limits = wr.Limits(
        max_concurrent_creates=64,
        max_inflight_polls=64,
        requests_per_second=options.get("requests_per_second"),
    )
    policy = wr.PollPolicy(initial_delay=2.0 * scale, max_interval=8.0 * scale)
    window = options.get("window", 0.0)

    def on_done(handle: wr.TaskHandle) -> None:
        resolved[handle.task_id or ""] = time.monotonic()

    async with wr.Session("test-key", base_url, poll=policy, limits=limits) as session:
        baseline = _rss_kib()
        if window:
            handles = await _arriving(session, tasks, window, on_done)
        else:
            handles = await session.submit_many(
                ({"model": MODEL, "prompt": f"bench {i}"} for i in range(tasks)), concurrency=64
            )
            for handle in handles:  # a burst: nothing can have finished yet
                handle.add_done_callback(on_done)
        peak_pending_rss = _rss_kib() - baseline
        failed = 0
        for handle in handles:
            try:
                await handle
            except wr.WorldRouterError:
                failed += 1
        stats = session.stats
    return {
        "resolved": resolved,
        "failed": failed,
        "pending_rss_kib": peak_pending_rss,
        "rate_limit_pauses": stats.rate_limit_pauses,
    }


async def _arrive(index: int, tasks: int, window: float, started: float) -> None:
    """Sleep until task `index` of a stream spread evenly over `window` seconds arrives."""
    delay = started + window * index / tasks - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _arriving(
    session: Any, tasks: int, window: float, on_done: Callable[[Any], object]
) -> list[Any]:
    """Submit `tasks` as a stream over `window` seconds through 64 submit workers."""
    handles: list[Any] = [None] * tasks
    indices = iter(range(tasks))
    started = time.monotonic()

    async def submitter() -> None:
        for index in indices:
            await _arrive(index, tasks, window, started)
            handles[index] = await session.submit(MODEL, f"bench {index}")
            handles[index].add_done_callback(on_done)

    await asyncio.gather(*(submitter() for _ in range(64)))
    return handles


async def _fixed_interval_loop(
    tasks: int,
    interval: float,
    window: float,
    create: Callable[[int], Awaitable[str]],
    status_of: Callable[[str], Awaitable[str]],
) -> dict[str, Any]:
    """One asyncio task per job: create, then sleep a fixed interval and poll until done."""
    resolved: dict[str, float] = {}
    creates = asyncio.Semaphore(64)
    failed = 0
    started = time.monotonic()

    async def job(index: int) -> None:
        nonlocal failed
        await _arrive(index, tasks, window, started)
        async with creates:
            task_id = await create(index)
        while True:
            await asyncio.sleep(interval)
            status = await status_of(task_id)
            if status in ("completed", "failed"):
                resolved[task_id] = time.monotonic()
                failed += status == "failed"
                return

    baseline = _rss_kib()
    await asyncio.gather(*(job(i) for i in range(tasks)))
    return {"resolved": resolved, "failed": failed, "pending_rss_kib": _rss_kib() - baseline}


async def worker_naive(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """What most users write first: aiohttp, one task per job, a fixed sleep."""
    url = f"{base_url}/images/generation_tasks"
    async with aiohttp.ClientSession(headers=HEADERS) as http:

        async def create(index: int) -> str:
            async with http.post(url, json={"model": MODEL, "prompt": f"bench {index}"}) as r:
                return str((await r.json())["id"])

        async def status_of(task_id: str) -> str:
            async with http.get(f"{url}/{task_id}") as r:
                return str((await r.json())["status"])

        return await _fixed_interval_loop(
            tasks, options["interval"], options.get("window", 0.0), create, status_of
        )


async def worker_openai(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The same loop through openai-python's generic AsyncOpenAI.post/get."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(api_key="test-key", base_url=base_url, max_retries=2)
    async with client:

        async def create(index: int) -> str:
            body = await client.post(
                "/images/generation_tasks",
                body={"model": MODEL, "prompt": f"bench {index}"},
                cast_to=object,
            )
            return str(body["id"])  # type: ignore[index]

        async def status_of(task_id: str) -> str:
            body = await client.get(f"/images/generation_tasks/{task_id}", cast_to=object)
            return str(body["status"])  # type: ignore[index]

        return await _fixed_interval_loop(
            tasks, options["interval"], options.get("window", 0.0), create, status_of
        )


_JSON_TYPE = {"Content-Type": "application/json"}


async def _raw_create(http: aiohttp.ClientSession, url: str, prompt: str) -> str:
    """The raw floor's create: json.dumps, POST, json.loads; returns the task ID."""
    payload = json.dumps({"model": MODEL, "prompt": prompt}).encode()
    async with http.post(url, data=payload, headers=_JSON_TYPE) as r:
        return str(json.loads(await r.read())["id"])


async def _raw_status(http: aiohttp.ClientSession, url: str, task_id: str) -> str:
    """The raw floor's poll: GET and json.loads; returns the status."""
    async with http.get(f"{url}/{task_id}") as r:
        return str(json.loads(await r.read())["status"])


async def worker_raw(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The transport floor: bare aiohttp bytes and json.loads, no models, no retries."""
    url = f"{base_url}/images/generation_tasks"
    async with aiohttp.ClientSession(headers=HEADERS) as http:

        def create(index: int) -> Awaitable[str]:
            return _raw_create(http, url, f"bench {index}")

        return await _fixed_interval_loop(
            tasks,
            options["interval"],
            options.get("window", 0.0),
            create,
            functools.partial(_raw_status, http, url),
        )


async def worker_state(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """Poller state per pending task: track N IDs and measure what the poller allocates."""
    import worldrouter_async as wr

    policy = wr.PollPolicy(initial_delay=3600.0, adaptive=False)
    async with wr.Session("test-key", base_url, poll=policy) as session:
        ids = [f"imgtask_{i:032x}" for i in range(tasks)]
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        handles = [session.track(task_id) for task_id in ids]
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        allocated = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        for handle in handles:
            handle.cancel()
    return {"resolved": {}, "failed": 0, "state_bytes_per_task": allocated / tasks}


# --- per-request cost at steady state: the same requests, the same schedule ---------------


async def _raw_create_many(
    http: aiohttp.ClientSession, url: str, prefix: str, tasks: int
) -> list[str]:
    """Create `tasks` tasks, 64 at a time, prompted `prefix 0`, `prefix 1`...; their IDs."""
    limit = asyncio.Semaphore(64)

    async def create(index: int) -> str:
        async with limit:
            return await _raw_create(http, url, f"{prefix} {index}")

    return list(await asyncio.gather(*(create(i) for i in range(tasks))))


async def _never_ending(base_url: str, tasks: int) -> list[str]:
    """Create `tasks` tasks that never finish (setup, before any clock starts)."""
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        return await _raw_create_many(http, f"{base_url}/images/generation_tasks", "[never]", tasks)


async def _sdk_phase(session: Any, phase: Callable[[Any], Awaitable[list[Any]]]) -> dict[str, Any]:
    """Time `phase` inside `session`, then cancel the handles it returns."""
    async with session:
        cpu = time.process_time()
        handles = await phase(session)
        phase_cpu = time.process_time() - cpu
        for handle in handles:
            handle.cancel()
    return {"resolved": {}, "failed": 0, "phase_cpu": phase_cpu}


async def worker_sdk_polls(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The SDK polling `tasks` pending tasks every `interval` seconds for `duration`."""
    import worldrouter_async as wr

    ids = await _never_ending(base_url, tasks)
    interval = options["interval"]
    policy = wr.PollPolicy(
        initial_delay=interval, factor=1.0, max_interval=interval, jitter=0.0, adaptive=False
    )

    async def track(session: wr.Session) -> list[wr.TaskHandle]:
        handles = [session.track(task_id) for task_id in ids]
        await asyncio.sleep(options["duration"])
        return handles

    return await _sdk_phase(wr.Session("test-key", base_url, poll=policy), track)


async def worker_raw_polls(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The raw floor on the same schedule: one loop per task, sleep, GET, json.loads."""
    ids = await _never_ending(base_url, tasks)
    url = f"{base_url}/images/generation_tasks"
    interval = options["interval"]
    async with aiohttp.ClientSession(headers=HEADERS) as http:

        async def poll(task_id: str) -> None:
            while True:
                await asyncio.sleep(interval)
                await _raw_status(http, url, task_id)

        cpu = time.process_time()
        loops = [asyncio.create_task(poll(task_id)) for task_id in ids]
        await asyncio.sleep(options["duration"])
        phase_cpu = time.process_time() - cpu
        for loop in loops:
            loop.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    return {"resolved": {}, "failed": 0, "phase_cpu": phase_cpu}


async def worker_sdk_creates(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The SDK creating `tasks` tasks, 64 at a time (validation, idempotency key, handle)."""
    import worldrouter_async as wr

    policy = wr.PollPolicy(initial_delay=3600.0, max_interval=3600.0, adaptive=False)
    limits = wr.Limits(max_concurrent_creates=64)

    async def create(session: wr.Session) -> list[wr.TaskHandle]:
        requests = ({"model": MODEL, "prompt": f"bench {i}"} for i in range(tasks))
        return await session.submit_many(requests, concurrency=64)

    session = wr.Session("test-key", base_url, poll=policy, limits=limits)
    return await _sdk_phase(session, create)


async def worker_raw_creates(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The raw floor: `tasks` POSTs, 64 at a time, json.dumps and json.loads."""
    url = f"{base_url}/images/generation_tasks"
    async with aiohttp.ClientSession(headers=HEADERS) as http:
        cpu = time.process_time()
        await _raw_create_many(http, url, "bench", tasks)
        phase_cpu = time.process_time() - cpu
    return {"resolved": {}, "failed": 0, "phase_cpu": phase_cpu}


async def worker_sdk_mix(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The SDK creating `tasks` tasks arriving over `window` seconds (64 submitters), polling
    each every `interval` until it finishes."""
    import worldrouter_async as wr

    interval = options["interval"]
    policy = wr.PollPolicy(
        initial_delay=interval, factor=1.0, max_interval=interval, jitter=0.0, adaptive=False
    )
    limits = wr.Limits(max_concurrent_creates=64, max_inflight_polls=64)
    async with wr.Session("test-key", base_url, poll=policy, limits=limits) as session:
        cpu = time.process_time()
        handles = await _arriving(session, tasks, options["window"], lambda handle: None)
        failed = 0
        for handle in handles:
            try:
                await handle
            except wr.WorldRouterError:
                failed += 1
        phase_cpu = time.process_time() - cpu
    return {"resolved": {}, "failed": failed, "phase_cpu": phase_cpu}


async def worker_raw_mix(
    base_url: str, tasks: int, scale: float, options: dict[str, Any]
) -> dict[str, Any]:
    """The raw floor on the same work: the same arrivals, a fixed `interval` between polls."""
    url = f"{base_url}/images/generation_tasks"
    async with aiohttp.ClientSession(headers=HEADERS) as http:

        def create(index: int) -> Awaitable[str]:
            return _raw_create(http, url, f"bench {index}")

        cpu = time.process_time()
        result = await _fixed_interval_loop(
            tasks,
            options["interval"],
            options["window"],
            create,
            functools.partial(_raw_status, http, url),
        )
        result["phase_cpu"] = time.process_time() - cpu
    return result


# anyio imports its asyncio backend on first use: a one-time cost per process, like an
# import, so it is loaded (and reported) with the SDK's imports.
_SDK_IMPORTS = ("worldrouter_async", "anyio._backends._asyncio")
WORKER_IMPORTS: dict[str, tuple[str, ...]] = {
    "sdk": _SDK_IMPORTS,
    "state": _SDK_IMPORTS,
    "sdk_polls": _SDK_IMPORTS,
    "sdk_creates": _SDK_IMPORTS,
    "sdk_mix": _SDK_IMPORTS,
    "openai": ("openai",),
}

WORKERS: dict[str, Callable[..., Coroutine[Any, Any, dict[str, Any]]]] = {
    "sdk": worker_sdk,
    "naive": worker_naive,
    "openai": worker_openai,
    "raw": worker_raw,
    "state": worker_state,
    "sdk_polls": worker_sdk_polls,
    "raw_polls": worker_raw_polls,
    "sdk_creates": worker_sdk_creates,
    "raw_creates": worker_raw_creates,
    "sdk_mix": worker_sdk_mix,
    "raw_mix": worker_raw_mix,
}


def _settle_allocator() -> None:
    """Start every client from the same allocator state.

    asyncio reads each socket into a fresh 256 KiB buffer. Until a process frees a block
    above glibc's dynamic mmap threshold (128 KiB at start), every such buffer is mmap'ed,
    page-faulted, shrunk and unmapped, which makes each read several times dearer. Whether
    a client happened to free one early (a big list or dict resize) decided up to a fifth of
    its CPU time, so each worker frees one block before the clocks start.
    """
    block = bytearray(1 << 20)
    del block


def run_worker(args: argparse.Namespace) -> None:
    """Entry point of a worker process: measure one client and print JSON."""
    options = json.loads(args.options)
    _settle_allocator()
    # Import the client's library before the clocks start: import time is paid once per
    # process, not per request, and is reported on its own.
    cpu = time.process_time()
    for module in WORKER_IMPORTS.get(args.worker, ()):
        importlib.import_module(module)
    import_cpu = time.process_time() - cpu
    wall = time.perf_counter()
    cpu = time.process_time()
    tasks = args.tasks[0]
    result = asyncio.run(WORKERS[args.worker](args.base_url, tasks, args.time_scale, options))
    result["wall"] = time.perf_counter() - wall
    result["cpu"] = time.process_time() - cpu
    result["import_cpu"] = import_cpu
    result["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(result))


# --- the harness ---------------------------------------------------------------------------


def emulator_stats(base_url: str) -> dict[str, Any]:
    """The counters of the emulator at `base_url` (``/_emulator/stats``)."""

    async def fetch() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(base_url.removesuffix("/v1") + "/_emulator/stats") as response,
        ):
            return dict(await response.json())

    return asyncio.run(fetch())


@contextmanager
def emulator(time_scale: float, extra: list[str]) -> Any:
    """An emulator in its own process; yields (base_url, stats function)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worldrouter_async",
            "emulator",
            "--port",
            "0",
            "--time-scale",
            str(time_scale),
            "--seed",
            "1",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = next(w for w in process.stdout.readline().split() if w.startswith("http"))

        yield base_url, functools.partial(emulator_stats, base_url)
    finally:
        process.terminate()
        process.wait(timeout=10)


def measure(
    worker: str, tasks: int, time_scale: float, options: dict[str, Any], emulator_args: list[str]
) -> dict[str, Any]:
    """Run one worker against a fresh emulator and derive the reported metrics."""
    with emulator(time_scale, emulator_args) as (base_url, stats):
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                worker,
                "--base-url",
                base_url,
                "--tasks",
                str(tasks),
                "--time-scale",
                str(time_scale),
                "--options",
                json.dumps(options),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        result = json.loads(output.splitlines()[-1])
        server = stats()
    requests = server["create_requests"] + server["polls"]
    latencies = sorted(
        resolved - server["completed_at"][task_id]
        for task_id, resolved in result["resolved"].items()
        if task_id in server["completed_at"]
    )
    row = {
        "client": worker,
        "tasks": tasks,
        "wall_s": result["wall"],
        "cpu_s_per_1k_tasks": result["cpu"] / tasks * 1000,
        "cpu_us_per_request": result["cpu"] / max(requests, 1) * 1e6,
        "requests_per_task": requests / tasks,
        "rate_limited": server["faults"].get("429", 0),
        "failed": result["failed"],
        "peak_rss_mib": result["peak_rss_kib"] / 1024,
        "import_cpu_ms": result["import_cpu"] * 1000,
        "rss_kib_per_10k_pending": result.get("pending_rss_kib", 0) / tasks * 10_000,
        # Requests the server processed (429s are answered before its counters).
        "achieved_rps": requests / result["wall"],
        # The median whole second: the rate while saturated, not diluted by ramp and tail.
        "median_second_rps": statistics.median(sorted(server["per_second"].values())[1:-1] or [0]),
    }
    if latencies:
        row |= {
            "latency_p50_ms": 1000 * statistics.median(latencies),
            "latency_p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
            "latency_max_ms": 1000 * latencies[-1],
            "latency_mean_ms": 1000 * statistics.fmean(latencies),
        }
    if "phase_cpu" in result:
        # Steady-state workers time one phase only: the polls, the creates, or both.
        phase_requests = {
            "polls": server["polls"],
            "creates": server["create_requests"],
            "mix": server["create_requests"] + server["polls"],
        }[worker.rsplit("_", 1)[1]]
        row["phase_requests"] = phase_requests
        row["cpu_us_per_request"] = result["phase_cpu"] / phase_requests * 1e6
    if "state_bytes_per_task" in result:
        row["state_bytes_per_task"] = result["state_bytes_per_task"]
    return row


STEADY_DURATION = 5.0
STEADY_CREATES = 10_000
#: 1,000 polls a second: within what one emulator process serves on a busy machine, so both
#: clients keep the schedule and send the same requests.
POLLS_INTERVAL = 1.0
MIX_TASKS = 1_000
MIX_WINDOW = 5.0
MIX_INTERVAL = 1.0

#: What the steady-state section measures: (kind, tasks, options). A `mix` creates tasks
#: and polls each on the same fixed schedule until it finishes: the target's workload.
STEADY_PLAN: list[tuple[str, int, dict[str, Any]]] = [
    ("mix", MIX_TASKS, {"interval": MIX_INTERVAL, "window": MIX_WINDOW}),
    ("polls", 1000, {"interval": POLLS_INTERVAL, "duration": STEADY_DURATION}),
    ("creates", STEADY_CREATES, {}),
]


def interleaved_order(rounds: int) -> list[tuple[int, str]]:
    """(round, client) in the order A B B A A B ...: each client goes first in half the
    rounds, so a drift in the machine's load falls on both alike."""
    order = []
    for number in range(rounds):
        pair = ("sdk", "raw") if number % 2 == 0 else ("raw", "sdk")
        order += [(number, client) for client in pair]
    return order


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and the interquartile range of `values`."""
    ordered = sorted(values)
    if len(ordered) > 1:
        lower, _, upper = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        lower = upper = ordered[0]
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": lower,
        "q3": upper,
    }


def steady_state(scale: float, rounds: int, kinds: list[str]) -> list[dict[str, Any]]:
    """Per-request CPU of the mix, the polls and the creates, SDK and raw interleaved.

    For each kind, `rounds` rounds run the two clients in the order A B B A ..., each run in
    its own worker process against its own emulator process; a row gives the median and
    spread of a client's CPU per request, and the SDK's row the ratio of the medians and
    the spread of the per-round ratios.
    """
    rows = []
    for kind, tasks, options in (step for step in STEADY_PLAN if step[0] in kinds):
        runs: dict[str, list[float]] = {"sdk": [0.0] * rounds, "raw": [0.0] * rounds}
        requests: dict[str, list[int]] = {"sdk": [], "raw": []}
        for number, client in interleaved_order(rounds):
            row = measure(f"{client}_{kind}", tasks, scale, options, [])
            runs[client][number] = row["cpu_us_per_request"]
            requests[client].append(row["phase_requests"])
            print(f"{kind} round {number + 1} {client}: {row['cpu_us_per_request']:.1f} us")
        ratios = [sdk / raw for sdk, raw in zip(runs["sdk"], runs["raw"], strict=True)]
        for client in ("sdk", "raw"):
            stats = spread(runs[client])
            row = {
                "requests": kind,
                "client": client,
                "requests_per_run": statistics.median(requests[client]),
                "cpu_us_median": stats["median"],
                "cpu_us_min_max": f"{stats['min']:.1f} - {stats['max']:.1f}",
                "cpu_us_iqr": f"{stats['q1']:.1f} - {stats['q3']:.1f}",
            }
            if client == "sdk":
                ratio = spread(ratios)
                medians = stats["median"] / spread(runs["raw"])["median"]
                row["vs_raw"] = f"{medians:.2f}x"
                row["round_ratios_min_max"] = f"{ratio['min']:.2f} - {ratio['max']:.2f}x"
            rows.append(row)
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table of `columns` from `rows`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


COMPARISON = [
    "client",
    "tasks",
    "arrivals",
    "wall_s",
    "cpu_s_per_1k_tasks",
    "cpu_us_per_request",
    "requests_per_task",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_max_ms",
    "peak_rss_mib",
    "rss_kib_per_10k_pending",
    "import_cpu_ms",
    "failed",
]
RATE = [
    "client",
    "tasks",
    "wall_s",
    "requests_per_task",
    "rate_limited",
    "achieved_rps",
    "median_second_rps",
    "failed",
]


def comparison_section(args: argparse.Namespace) -> list[str]:
    """Every client on a stream and on a cold burst, at the SDK's detection latency."""
    scale = args.time_scale
    rows: list[dict[str, Any]] = []
    burst_rows: list[dict[str, Any]] = []
    for tasks in args.tasks:
        # Arrivals spread over at least the window, at most 1,000 a second (the emulator's
        # single process serves a few thousand requests a second in all).
        stream_window = max(args.arrival_window, tasks / 1000)
        for window, table_rows in ((stream_window, rows), (0.0, burst_rows)):
            sdk = measure("sdk", tasks, scale, {"window": window}, [])
            sdk["arrivals"] = f"over {window:g} s" if window else "burst"
            table_rows.append(sdk)
            interval = fixed_interval_for(sdk, args.match)
            for client in args.clients:
                if client != "sdk":
                    row = measure(
                        client, tasks, scale, {"interval": interval, "window": window}, []
                    )
                    row["arrivals"] = sdk["arrivals"]
                    table_rows.append(row)
            print(table(table_rows, COMPARISON), file=sys.stderr)
    for tasks in args.sdk_only_tasks:
        for window, table_rows in (
            (max(args.arrival_window, tasks / 1000), rows),
            (0.0, burst_rows),
        ):
            row = measure("sdk", tasks, scale, {"window": window}, [])
            row["arrivals"] = f"over {window:g} s" if window else "burst"
            table_rows.append(row)
    raw_floor = {
        (r["tasks"], r["arrivals"]): r["cpu_us_per_request"]
        for r in rows + burst_rows
        if r["client"] == "raw"
    }
    return [
        "",
        "### Throughput, CPU, requests and detection latency",
        "",
        f"Fixed-interval clients poll at the interval that gives the SDK's {args.match} "
        "detection latency in that row.",
        "",
        "Tasks arriving as a stream (as from a web app or pipeline), every client alike:",
        "",
        table(rows, COMPARISON),
        "",
        "The same tasks created in one cold burst:",
        "",
        table(burst_rows, COMPARISON),
        "",
        "CPU per request relative to the raw aiohttp floor: "
        + ", ".join(
            f"{r['client']} {r['tasks']:,} {r['arrivals']} "
            f"{r['cpu_us_per_request'] / raw_floor[r['tasks'], r['arrivals']]:.2f}x"
            for r in rows + burst_rows
            if (r["tasks"], r["arrivals"]) in raw_floor and r["client"] != "raw"
        ),
    ]


def steady_section(args: argparse.Namespace) -> list[str]:
    """CPU per request of the create+poll mix, the polls and the creates, SDK against the
    raw floor, interleaved over rounds."""
    steady = steady_state(args.time_scale, args.rounds, args.steady)
    columns = [
        "requests",
        "client",
        "requests_per_run",
        "cpu_us_median",
        "cpu_us_min_max",
        "cpu_us_iqr",
        "vs_raw",
        "round_ratios_min_max",
    ]
    return [
        "",
        "### CPU per request at steady state: the same requests on the same schedule",
        "",
        f"{args.rounds} rounds, the SDK and raw runs interleaved (SDK, raw, raw, SDK, ...), "
        "each in its own worker process against its own emulator process; the median, the "
        "range and the interquartile range of CPU (process time) per request. `vs_raw` is "
        "the ratio of the medians, `round_ratios_min_max` the range of the ratio within "
        f"each round. Mix: {MIX_TASKS:,} tasks arriving evenly over {MIX_WINDOW:g} s, each "
        f"polled every {MIX_INTERVAL:g} s until it finishes (about 500 requests a second, "
        "within what one emulator process serves). Polls: 1,000 pending tasks polled every "
        f"{POLLS_INTERVAL:g} s for {STEADY_DURATION:g} s. Creates: {STEADY_CREATES:,} "
        "creates, 64 at a time.",
        "",
        table(steady, columns),
    ]


def state_section(args: argparse.Namespace) -> list[str]:
    """The poller's memory per pending task."""
    scale = args.time_scale
    state = [measure("state", n, scale, {}, []) for n in args.sdk_only_tasks or [10_000]]
    return [
        "",
        "### Poller state per pending task",
        "",
        table(state, ["tasks", "state_bytes_per_task", "peak_rss_mib"]),
    ]


def rate_section(args: argparse.Namespace) -> list[str]:
    """The SDK against a 429-limited emulator, with and without a known rate."""
    scale, limit = args.time_scale, ["--rate-limit", str(args.rate_limit)]
    limited = [
        measure("sdk", args.rate_tasks, scale, {}, limit),
        measure("sdk", args.rate_tasks, scale, {"requests_per_second": args.rate_limit}, limit),
    ]
    limited[1]["client"] = "sdk + requests_per_second"
    return [
        "",
        f"### Against a 429-limited emulator ({args.rate_limit:g} requests/s)",
        "",
        table(limited, RATE),
        "",
        "Allowed rate used, over the whole run (including ramp-up and the tail when few tasks "
        "are left) / in the median second: "
        + ", ".join(
            f"{r['client']} {100 * r['achieved_rps'] / args.rate_limit:.0f}% / "
            f"{100 * r['median_second_rps'] / args.rate_limit:.0f}%"
            for r in limited
        ),
    ]


SECTION_REPORTS: dict[str, Callable[[argparse.Namespace], list[str]]] = {
    "comparison": comparison_section,
    "steady": steady_section,
    "state": state_section,
    "rate": rate_section,
}
SECTIONS = tuple(SECTION_REPORTS)


def fixed_interval_for(sdk: dict[str, Any], match: str) -> float:
    """The fixed interval whose detection latency matches the SDK's row.

    A fixed interval T detects a finished task T/2 late on average and 0.95 T late at the
    95th percentile (the finish falls uniformly between two polls).
    """
    if match == "p95":
        return sdk["latency_p95_ms"] / 1000 / 0.95
    return 2 * sdk["latency_mean_ms"] / 1000


def _sdk_version() -> str:
    """The SDK's version and, in a git checkout, the commit measured."""
    from worldrouter_async import __version__

    git = shutil.which("git")
    if git is None:
        return __version__
    commit = subprocess.run(
        [git, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
        check=False,
    ).stdout.strip()
    return f"{__version__} ({commit})" if commit else __version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, nargs="*", default=[1000, 10_000])
    parser.add_argument("--sdk-only-tasks", type=int, nargs="*", default=[100_000])
    parser.add_argument("--clients", nargs="+", default=["sdk", "naive", "openai", "raw"])
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument(
        "--arrival-window",
        type=float,
        default=10.0,
        help="seconds over which tasks arrive in the main comparison (a burst is also run)",
    )
    parser.add_argument("--rate-limit", type=float, default=400.0)
    parser.add_argument("--rate-tasks", type=int, default=3000)
    parser.add_argument(
        "--rounds",
        "--repeats",
        dest="rounds",
        type=int,
        default=5,
        help="interleaved rounds (one SDK and one raw run each) per steady-state row",
    )
    parser.add_argument(
        "--steady",
        nargs="+",
        choices=[kind for kind, _, _ in STEADY_PLAN],
        default=[kind for kind, _, _ in STEADY_PLAN],
        help="the steady-state rows to measure",
    )
    parser.add_argument(
        "--match",
        choices=["mean", "p95"],
        default="mean",
        help="give the fixed-interval clients the SDK's mean or its p95 detection latency",
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="measure only these parts (the others are left out of the report)",
    )
    parser.add_argument("--out", type=Path, help="write the Markdown report here")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    report = []
    for section in args.sections:
        report += SECTION_REPORTS[section](args)
    header = [
        f"Command: `python benchmarks/run.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; load average {load_before:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end  ",
        f"Versions: worldrouter_async {_sdk_version()}, aiohttp {aiohttp.__version__}  ",
        f"Emulator time scale {args.time_scale} (a 25 s generation takes "
        f"{25 * args.time_scale:g} s); harness wall time {time.perf_counter() - started:,.0f} s.",
    ]
    text = "\n".join(header + report) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
