"""From flags to SDK objects: the `Session` and the request parameters the flags ask for.

`generate`, `wait` and `batch` share the connection and request flags; reading them in one
place keeps a flag meaning the same thing in every command.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._config import Limits, PollPolicy
from .._session import Session
from ._errors import UsageError


def session_from_flags(args: argparse.Namespace, **overrides: Any) -> Session:
    """The `Session` the connection flags describe; `overrides` set further options."""
    if args.poll_initial <= 0 or args.poll_max <= 0:
        raise UsageError("--poll-initial and --poll-max must be positive")
    rate = args.requests_per_second
    if rate is not None and not rate > 0:
        raise UsageError(f"--requests-per-second must be positive (got {rate:g})")
    options: dict[str, Any] = {
        "api_key": args.api_key,
        "base_url": args.base_url,
        "allow_insecure": args.insecure,
        "task_timeout": args.timeout,
        "poll": PollPolicy(initial_delay=args.poll_initial, max_interval=args.poll_max),
        "proxy": args.proxy,
        "verify": True if args.ca_bundle is None else args.ca_bundle,
    }
    if rate is not None:
        options["limits"] = Limits(requests_per_second=rate)
    options.update(overrides)
    return Session(**options)


def request_params(args: argparse.Namespace) -> dict[str, Any]:
    """The request flags given (``--model``, ``--size`` ...), as `Session.submit` keywords."""
    names = ("model", "size", "quality", "n", "output_format")
    return {name: value for name in names if (value := getattr(args, name)) is not None}
