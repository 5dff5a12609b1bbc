"""From flags to SDK objects: the `Session` and the request parameters the flags ask for.

`generate`, `wait` and `batch` share the connection and request flags; reading them in one
place keeps a flag meaning the same thing in every command.
"""

from __future__ import annotations

import argparse
from typing import Any

from .._config import PollPolicy
from .._session import Session
from ._errors import UsageError


def session_from_flags(args: argparse.Namespace, **overrides: Any) -> Session:
    """The `Session` the connection flags describe; `overrides` set further options."""
    if args.poll_initial <= 0 or args.poll_max <= 0:
        raise UsageError("--poll-initial and --poll-max must be positive")
    options: dict[str, Any] = {
        "api_key": args.api_key,
        "base_url": args.base_url,
        "allow_insecure": args.insecure,
        "task_timeout": args.timeout,
        "poll": PollPolicy(initial_delay=args.poll_initial, max_interval=args.poll_max),
        "proxy": args.proxy,
        "verify": True if args.ca_bundle is None else args.ca_bundle,
    }
    options.update(overrides)
    return Session(**options)


def request_params(args: argparse.Namespace) -> dict[str, Any]:
    """The request flags given (``--model``, ``--size`` ...), as `Session.submit` keywords."""
    names = ("model", "size", "quality", "n", "output_format")
    return {name: value for name in names if (value := getattr(args, name)) is not None}
