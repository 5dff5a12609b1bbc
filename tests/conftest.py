"""Shared fixtures: the bundled emulator plugin, the asyncio backend and session factories."""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from worldrouter_async import Session
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator, FakeClock

pytest_plugins = ["pytester", "worldrouter_async.testing.pytest_plugin"]

SessionFactory = Callable[..., AbstractAsyncContextManager[Session]]


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp is asyncio-only, so every async test runs on asyncio."""
    return "asyncio"


@pytest.fixture
def emulator(worldrouter_emulator: Emulator) -> Emulator:
    """The running emulator, under a short name."""
    return worldrouter_emulator


@pytest.fixture
def session(worldrouter_session: Session) -> Session:
    """An open fast session against `emulator`, under a short name."""
    return worldrouter_session


def _session_factory(emulator: Emulator, **defaults: Any) -> SessionFactory:
    @asynccontextmanager
    async def factory(**options: Any) -> AsyncIterator[Session]:
        options = {"poll": FAST_POLL, "retry": FAST_RETRY, **defaults, **options}
        async with Session(emulator.api_key, emulator.base_url, **options) as opened:
            yield opened

    return factory


@pytest.fixture
def make_session(emulator: Emulator) -> SessionFactory:
    """Open extra sessions against `emulator` with custom options (fast policies by default)."""
    return _session_factory(emulator)


@pytest.fixture
def clock() -> FakeClock:
    """Virtual time that jumps to the next timer whenever the event loop is idle."""
    return FakeClock()


@pytest.fixture
async def clocked_emulator(clock: FakeClock, anyio_backend: str) -> AsyncIterator[Emulator]:
    """An emulator whose tasks, faults and request log run on `clock`."""
    async with Emulator(clock=clock) as emulator:
        yield emulator


@pytest.fixture
def make_clocked_session(clocked_emulator: Emulator, clock: FakeClock) -> SessionFactory:
    """Open sessions against `clocked_emulator` that poll, retry and time out on `clock`."""
    return _session_factory(clocked_emulator, clock=clock)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (root only; skipped where mounting is not allowed)."""
    mount_command, umount_command = shutil.which("mount"), shutil.which("umount")
    if mount_command is None or umount_command is None:
        pytest.skip("no mount command here")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        [mount_command, "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run([umount_command, "-l", str(mount)], check=False)


def fill_disk(directory: Path) -> Path:
    """Write a filler file in `directory` until its file system is full; returns the file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(bytes(4096))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler
