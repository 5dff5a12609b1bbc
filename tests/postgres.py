"""A real PostgreSQL server for the tests: the ``pgserver`` wheel's binaries, started once per
test session on a Unix socket in a temporary directory, and a fresh database per test."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg

_numbers = itertools.count()


def start_server(directory: Path) -> Iterator[str]:
    """Start PostgreSQL in `directory`; yields the server's URL, stops it afterwards."""
    with warnings.catch_warnings():  # it looks up a runtime dir that containers often lack
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import pgserver

        server = pgserver.get_server(directory, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            server.cleanup()


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; returns its URL (``postgresql://USER@/NAME?host=``)."""
    name = f"test_{next(_numbers)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    socket_dir = server_url.partition("?host=")[2]
    return f"postgresql://postgres@/{name}?host={quote(socket_dir, safe='/')}"
