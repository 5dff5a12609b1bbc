"""Watching a session: an observer gets every request, retry, pause and outage as a value."""

import asyncio
from collections import Counter

import worldrouter_async as wr


class Metrics:
    """Counts what matters for a dashboard; `on_event` must be quick and must not block."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.slowest_request = 0.0

    def on_event(self, event: wr.Event) -> None:
        match event:
            case wr.RequestAnswered(status=status, elapsed=elapsed, probe=False):
                self.counts[f"http_{status}"] += 1
                self.slowest_request = max(self.slowest_request, elapsed)
            case wr.RetryScheduled():
                self.counts["retries"] += 1
            case wr.RateLimitPaused(seconds=seconds):
                self.counts["rate_limit_pauses"] += 1
                print(f"rate limited: every request waits {seconds:.3f}s")
            case wr.BreakerOpened() | wr.BreakerClosed():
                print("outage breaker:", type(event).__name__)
            case wr.TaskResolved(succeeded=succeeded):
                self.counts["succeeded" if succeeded else "failed"] += 1
            case _:
                pass  # other kinds, including ones later versions add


async def main() -> None:
    metrics = Metrics()
    async with wr.Session(observers=[metrics]) as session:
        await session.generate("gpt-image-2", "a paper crane")
    print(dict(metrics.counts), f"slowest {metrics.slowest_request * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
