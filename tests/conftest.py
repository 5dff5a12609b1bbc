"""Shared fixtures: the bundled emulator plugin, the asyncio backend and session factories."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from hypothesis import settings

from worldrouter_async import ImageRequest, Session
from worldrouter_async.batch import BatchItem
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator, FakeClock

from .hostile import HostileServer
from .postgres import fresh_database, start_server

pytest_plugins = ["pytester", "worldrouter_async.testing.pytest_plugin", "tests.s3"]

# Hypothesis's per-example deadline is a wall-clock window: on a busy machine it flakes.
settings.register_profile("worldrouter", deadline=None)
settings.load_profile("worldrouter")

SessionFactory = Callable[..., AbstractAsyncContextManager[Session]]


def batch_items(count: int, *, marker: str = "") -> list[BatchItem]:
    """`count` bulk requests with ids r0, r1, ... and prompts `marker` + "prompt N"."""
    return [
        BatchItem(f"r{i}", ImageRequest(model="gpt-image-2", prompt=f"{marker}prompt {i}"))
        for i in range(count)
    ]


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


_NETWORK_ENV = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


@pytest.fixture(autouse=True)
def _hermetic_network_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions read proxies and CAs from the environment: tests start without any."""
    for name in _NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server (the pgserver wheel), started once per test session.

    Its data lives outside pytest's temporary tree: another pytest run on the machine makes
    that tree private (0700) to the user running it, and pgserver's own user then loses it.
    """
    with tempfile.TemporaryDirectory(prefix="worldrouter-postgres-") as directory:
        yield from start_server(Path(directory))


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """The URL of a fresh, empty database on `postgres_server`, for this test alone."""
    return fresh_database(postgres_server)


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A private certificate authority, trusted by nothing unless a test says so."""
    return trustme.CA()


@pytest.fixture(scope="session")
def ca_bundle(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tls_ca`'s certificate as a PEM file, what verify=PATH and --ca-bundle take."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(scope="session")
def server_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server context with a `tls_ca`-signed certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
async def https_emulator(anyio_backend: str, server_tls: ssl.SSLContext) -> AsyncIterator[Emulator]:
    """An emulator serving the API and storage over https with a private-CA certificate."""
    async with Emulator(ssl=server_tls) as emulator:
        yield emulator


@pytest.fixture
async def hostile(anyio_backend: str) -> AsyncIterator[HostileServer]:
    """A server with broken API answers and dangerous storage redirects (plain http)."""
    async with HostileServer() as server:
        yield server


class ForwardProxy:
    """A real forward proxy (proxy.py from PyPI) on loopback, requiring a user and password."""

    user = "proxyuser"
    password = "proxy-pass-not-for-logs"

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        #: The proxy URL with its credentials, as users write it in HTTPS_PROXY or proxy=.
        self.url = f"http://{self.user}:{self.password}@127.0.0.1:{port}"

    def tunnels_to(self, port: int) -> int:
        """How many CONNECT tunnels to 127.0.0.1:`port` the proxy has logged (when they close)."""
        return self.log.read_text().count(f"CONNECT 127.0.0.1:{port} ")

    async def wait_for_tunnel(self, port: int) -> int:
        """The tunnel count to `port` once at least one is logged (bounded: 30 s at most)."""
        for _ in range(1500):
            if count := self.tunnels_to(port):
                return count
            await anyio.sleep(0.02)
        return 0


@pytest.fixture(scope="session")
def forward_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForwardProxy]:
    """proxy.py started once per test run as a subprocess on 127.0.0.1 (ephemeral port)."""
    folder = tmp_path_factory.mktemp("proxy")
    port_file, log = folder / "port", folder / "access.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--log-file",
            str(log),
            "--log-level",
            "INFO",
            "--num-workers",
            "1",
            "--num-acceptors",
            "1",
            "--threaded",
            "--basic-auth",
            f"{ForwardProxy.user}:{ForwardProxy.password}",
        ],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # bounded: 30 s at most on a loaded machine
            if port_file.exists() and port_file.read_text().strip():
                break
            if process.poll() is not None:
                pytest.fail(f"proxy.py exited with {process.returncode}; see {log}")
            time.sleep(0.05)
        else:
            pytest.fail("proxy.py did not start within 30 s")
        yield ForwardProxy(int(port_file.read_text()), log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


class Chromium:
    """Debian's headless chromium, started fresh (own profile, no network chatter) per call."""

    #: Flags every run gets: headless, and nothing that talks to the network on its own.
    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    )

    def __init__(self, executable: str, profiles: Path) -> None:
        self.executable = executable
        self._profiles = profiles

    def run(self, url: str, *flags: str) -> str:
        """Open `url` with the extra `flags`; returns what chromium printed.

        Bounded at 40 s, under the per-test timeout, so a page that hangs the browser (an
        ``alert()`` that got through) fails with chromium's own output.
        """
        profile = tempfile.mkdtemp(dir=self._profiles)
        done = subprocess.run(
            [self.executable, *self.FLAGS, f"--user-data-dir={profile}", *flags, url],
            capture_output=True,
            text=True,
            check=False,
            timeout=40,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def dump_dom(self, url: str, *flags: str, budget_ms: int = 5000) -> str:
        """The DOM of `url` after its scripts ran for `budget_ms` of virtual time."""
        return self.run(url, f"--virtual-time-budget={budget_ms}", "--dump-dom", *flags)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """A real headless browser; its tests fail (never skip) where chromium is missing."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail(
            "chromium is not installed, and the browser tests need it (they never skip); "
            "install Debian's package: apt-get install -y chromium"
        )
    return Chromium(executable, tmp_path_factory.mktemp("chromium"))
