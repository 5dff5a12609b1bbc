"""A faithful emulator of WorldRouter's async image-task API, with fault injection, by job.

It serves the two documented routes with their JSON shapes, runs each task through
queued -> in_progress -> completed/failed on a scaled clock, and serves the finished images
from a separate storage origin that records whether it ever saw an Authorization header.

- `_api`: `EmulatedAPI`, the behaviour as plain methods (`handle`, `handle_storage`), no sockets
- `_server`: `Emulator`, that API served by aiohttp on loopback (sockets, TLS, outages)
- `_tasks`: task records, timing, validation and the task JSON
- `_faults`: injected and random faults, the rate limit, and their answers
- `_outages`: gateway outages, planned, answered and ended on the clock
- `_counters`: what the emulator has seen
- `_messages`: the request and answer values `EmulatedAPI` speaks
"""

from ._api import CREATE_PATH, STATS_PATH, EmulatedAPI
from ._counters import EmulatorCounters
from ._faults import Fault, FaultKind, OutageKind, Route
from ._messages import EmulatedRequest, EmulatedResponse, NoAnswer
from ._server import Emulator
from ._tasks import MAX_IMAGE_SIDE, MODEL_TIMINGS, EmulatedTask

__all__ = [
    "CREATE_PATH",
    "MAX_IMAGE_SIDE",
    "MODEL_TIMINGS",
    "STATS_PATH",
    "EmulatedAPI",
    "EmulatedRequest",
    "EmulatedResponse",
    "EmulatedTask",
    "Emulator",
    "EmulatorCounters",
    "Fault",
    "FaultKind",
    "NoAnswer",
    "OutageKind",
    "Route",
]
