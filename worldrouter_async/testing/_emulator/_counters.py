"""What the emulator has seen, counted for tests, benchmarks and its ``/_emulator/stats`` page."""

from __future__ import annotations

from collections import Counter
from typing import Any

from attrs import define, field


@define
class EmulatorCounters:
    """What the emulator has seen, readable from tests and benchmarks."""

    creates: int = 0
    create_requests: int = 0
    idempotent_replays: int = 0
    #: Creates that made a second (paid) task for an Idempotency-Key already used, which
    #: only an emulator started with ``ignore_idempotency=True`` does.
    duplicate_creates: int = 0
    polls: int = 0
    polls_by_task: Counter[str] = field(factory=Counter)
    faults: Counter[str] = field(factory=Counter)
    storage_requests: int = 0
    storage_auth_headers: int = 0
    rate_limited: int = 0  # requests answered 429 (counted in neither creates nor polls)
    connections: int = 0  # API connections that carried at least one request
    outages: int = 0  # outages begun (see `Emulator.outage`)
    outage_answers: int = 0  # requests answered 502/503/504 by an outage, never handled
    #: Accepted API requests per whole second of the monotonic clock (for rate benchmarks).
    per_second: Counter[int] = field(factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        """Counters as plain JSON-ready values."""
        return {
            "creates": self.creates,
            "create_requests": self.create_requests,
            "idempotent_replays": self.idempotent_replays,
            "duplicate_creates": self.duplicate_creates,
            "polls": self.polls,
            "faults": dict(self.faults),
            "storage_requests": self.storage_requests,
            "storage_auth_headers": self.storage_auth_headers,
            "rate_limited": self.rate_limited,
            "connections": self.connections,
            "outages": self.outages,
            "outage_answers": self.outage_answers,
            "per_second": dict(self.per_second),
        }
