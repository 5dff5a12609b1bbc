"""Network settings against real components: proxy.py as a forward proxy, trustme certificates."""

from __future__ import annotations

import socket
import ssl
import sys
import traceback
from pathlib import Path

import anyio
import pytest
import trustme
from yarl import URL

from worldrouter_async import (
    ConfigurationError,
    InsecureConnectionWarning,
    ProxyError,
    Session,
    TLSVerificationError,
)
from worldrouter_async._retries import is_transient
from worldrouter_async._transports.network import NetworkSettings
from worldrouter_async.testing import FAST_POLL, FAST_RETRY, Emulator

from .conftest import ForwardProxy

pytestmark = pytest.mark.anyio


def _port(url: str) -> int:
    port = URL(url).port
    assert port is not None
    return port


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _generate_and_download(emulator: Emulator, tmp_path: Path, **options: object) -> None:
    async with Session(
        emulator.api_key, emulator.base_url, poll=FAST_POLL, retry=FAST_RETRY, **options
    ) as session:
        result = await session.generate("gpt-image-2", "a kite")
        (path,) = await session.download(result, tmp_path)
        assert path.read_bytes().startswith(b"\x89PNG")


async def test_https_proxy_env_carries_api_calls_and_downloads(
    https_emulator: Emulator,
    forward_proxy: ForwardProxy,
    ca_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HTTPS_PROXY set after import is read when the session opens, for the API and storage."""
    api, storage = _port(https_emulator.base_url), _port(https_emulator.storage_url)
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    await _generate_and_download(https_emulator, tmp_path, verify=ca_bundle)
    assert await forward_proxy.wait_for_tunnel(api) >= 1
    assert await forward_proxy.wait_for_tunnel(storage) >= 1


async def test_proxy_argument_carries_api_calls_and_downloads(
    https_emulator: Emulator, forward_proxy: ForwardProxy, ca_bundle: Path, tmp_path: Path
) -> None:
    """Session(proxy=...) routes API calls and downloads through the proxy, with its login."""
    api, storage = _port(https_emulator.base_url), _port(https_emulator.storage_url)
    await _generate_and_download(
        https_emulator, tmp_path, verify=ca_bundle, proxy=forward_proxy.url
    )
    assert await forward_proxy.wait_for_tunnel(api) >= 1
    assert await forward_proxy.wait_for_tunnel(storage) >= 1


async def test_no_proxy_bypasses_the_proxy(
    https_emulator: Emulator,
    forward_proxy: ForwardProxy,
    ca_bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A host listed in NO_PROXY is reached directly."""
    api = _port(https_emulator.base_url)
    # The port may have served an earlier test's emulator whose tunnels the log holds.
    before = forward_proxy.tunnels_to(api)
    monkeypatch.setenv("HTTPS_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    await _generate_and_download(https_emulator, tmp_path, verify=ca_bundle)
    assert forward_proxy.tunnels_to(api) == before


async def test_trust_env_false_ignores_proxy_variables(
    https_emulator: Emulator, ca_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With trust_env=False a proxy variable pointing nowhere changes nothing."""
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_closed_port()}")
    await _generate_and_download(https_emulator, tmp_path, verify=ca_bundle, trust_env=False)


async def test_wrong_proxy_password_fails_at_once_without_leaking_it(
    https_emulator: Emulator,
    forward_proxy: ForwardProxy,
    ca_bundle: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 407 is a ProxyError that no retry can fix; the password is in no message or repr."""
    caplog.set_level("DEBUG", logger="worldrouter_async")
    wrong = "wrong-proxy-password"
    proxy = f"http://{forward_proxy.user}:{wrong}@127.0.0.1:{forward_proxy.port}"
    async with Session(
        https_emulator.api_key,
        https_emulator.base_url,
        poll=FAST_POLL,
        retry=FAST_RETRY,
        verify=ca_bundle,
        proxy=proxy,
    ) as session:
        assert wrong not in repr(session._network)
        with pytest.raises(ProxyError) as caught:
            await session.tasks.create("gpt-image-2", "a kite")
        handle = session.track("imgtask_1", timeout=600)
        with pytest.raises(ProxyError):
            await handle
        assert session.stats.retries == 0
    assert caught.value.status == 407
    assert not is_transient(caught.value)
    assert "407" in str(caught.value)
    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + caplog.text
    assert wrong not in text
    assert forward_proxy.password not in text


async def test_unreachable_proxy_is_a_proxy_error(
    https_emulator: Emulator, ca_bundle: Path
) -> None:
    """A proxy that refuses connections is named (without credentials) in a ProxyError."""
    proxy = f"http://someone:secret-pw@127.0.0.1:{_closed_port()}"
    async with Session(
        https_emulator.api_key, https_emulator.base_url, verify=ca_bundle, proxy=proxy
    ) as session:
        with pytest.raises(ProxyError, match="could not connect to the proxy") as caught:
            await session.tasks.retrieve("imgtask_1")
    assert caught.value.status is None
    assert "secret-pw" not in str(caught.value)
    assert "***@127.0.0.1" in str(caught.value)


async def test_plain_http_api_through_a_proxy_is_refused(
    emulator: Emulator, forward_proxy: ForwardProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key never travels in clear text to a proxy: opening such a session fails."""
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    session = Session(emulator.api_key, emulator.base_url)
    with pytest.raises(ConfigurationError, match="NO_PROXY"):
        await session.__aenter__()
    await session.aclose()


@pytest.mark.parametrize("bad", ["socks5://127.0.0.1:1080", "ftp://127.0.0.1:21", "http://"])
def test_proxy_must_be_an_http_url(bad: str) -> None:
    """A proxy URL aiohttp cannot use is a ConfigurationError when the session is made."""
    with pytest.raises(ConfigurationError, match="proxy URL"):
        Session("k", "http://127.0.0.1:1/v1", proxy=bad)


def test_proxy_without_a_scheme_is_http() -> None:
    """HTTPS_PROXY=proxy.corp:3128 means an http:// proxy, as curl reads it."""
    settings = NetworkSettings(proxy="user:pw@proxy.corp:3128", trust_env=True, verify=True)
    assert str(settings.proxy) == "http://***@proxy.corp:3128"


@pytest.mark.parametrize(
    ("no_proxy", "url", "bypassed"),
    [
        ("127.0.0.1", "https://127.0.0.1:8443/v1", True),
        ("example.com", "https://api.example.com/v1", True),
        (".example.com", "https://api.example.com/v1", True),
        ("example.com", "https://notexample.com/v1", False),
        ("example.com:8443", "https://example.com:8443/", True),
        ("example.com:8443", "https://example.com/", False),
        ("*", "https://anything.test/", True),
        ("", "https://api.example.com/v1", False),
    ],
)
def test_no_proxy_matching(
    no_proxy: str, url: str, bypassed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_PROXY names hosts, domain suffixes, host:port pairs, or * for everything."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", no_proxy)
    network = NetworkSettings(proxy=None, trust_env=True, verify=True).resolve()
    assert (network.proxy_for(URL(url)) is None) is bypassed


async def test_untrusted_certificate_fails_at_once(https_emulator: Emulator) -> None:
    """By default a private CA is untrusted: a clear TLSVerificationError naming the fix."""
    async with Session(
        https_emulator.api_key, https_emulator.base_url, retry=FAST_RETRY
    ) as session:
        with pytest.raises(TLSVerificationError, match="verify=") as caught:
            await session.tasks.retrieve("imgtask_1")
        assert session.stats.retries == 0
    assert "certificate" in str(caught.value)
    assert not is_transient(caught.value)


async def test_tracking_on_an_untrusted_server_ends_after_one_poll(
    https_emulator: Emulator,
) -> None:
    """A certificate failure ends the handle at once, not when its 600 s deadline passes."""
    async with Session(
        https_emulator.api_key, https_emulator.base_url, poll=FAST_POLL, retry=FAST_RETRY
    ) as session:
        handle = session.track("imgtask_1", timeout=600)
        with pytest.raises(TLSVerificationError):
            await handle
        assert session.stats.polls == 1


async def test_verify_path_trusts_a_private_ca(
    https_emulator: Emulator, ca_bundle: Path, tmp_path: Path
) -> None:
    """verify=PATH to a PEM bundle trusts that CA for API calls and downloads."""
    await _generate_and_download(https_emulator, tmp_path, verify=ca_bundle)


async def test_verify_ssl_context_is_used_as_given(
    https_emulator: Emulator, tls_ca: trustme.CA, tmp_path: Path
) -> None:
    """verify=SSLContext is used for every connection."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    await _generate_and_download(https_emulator, tmp_path, verify=context)


async def test_ssl_cert_file_set_after_import_is_honoured(
    https_emulator: Emulator, ca_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSL_CERT_FILE is read when the session opens, not when Python started."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle))
    await _generate_and_download(https_emulator, tmp_path)


async def test_trust_env_false_ignores_ssl_cert_file(
    https_emulator: Emulator, ca_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With trust_env=False, SSL_CERT_FILE does not add trust."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_bundle))
    async with Session(https_emulator.api_key, https_emulator.base_url, trust_env=False) as session:
        with pytest.raises(TLSVerificationError):
            await session.tasks.retrieve("imgtask_1")


async def test_verify_false_works_and_warns(https_emulator: Emulator, tmp_path: Path) -> None:
    """verify=False connects to any certificate, with a loud InsecureConnectionWarning."""
    with pytest.warns(InsecureConnectionWarning, match="verify=False"):
        session = Session(https_emulator.api_key, https_emulator.base_url, verify=False)
    async with session:
        task = await session.tasks.create("gpt-image-2", "a kite")
    assert task.status == "queued"


async def test_missing_ca_bundle_is_a_configuration_error(
    https_emulator: Emulator, tmp_path: Path
) -> None:
    """A CA bundle path that does not exist fails when the session opens, naming the path."""
    missing = tmp_path / "nope.pem"
    session = Session(https_emulator.api_key, https_emulator.base_url, verify=missing)
    with pytest.raises(ConfigurationError, match=r"nope\.pem"):
        await session.__aenter__()
    await session.aclose()


def test_verify_of_another_type_is_refused() -> None:
    """verify=1.5 is a ConfigurationError, not a TLS surprise later."""
    with pytest.raises(ConfigurationError, match="verify must be"):
        Session("k", "http://127.0.0.1:1/v1", verify=1.5)  # type: ignore[arg-type]


@pytest.mark.slow
async def test_cli_trusts_ca_bundle_and_uses_proxy(
    https_emulator: Emulator, forward_proxy: ForwardProxy, ca_bundle: Path, tmp_path: Path
) -> None:
    """generate --ca-bundle --proxy saves the images over https through the proxy."""
    api = _port(https_emulator.base_url)
    command = [
        sys.executable, "-m", "worldrouter_async", "generate", "a kite",
        "--base-url", https_emulator.base_url, "--api-key", https_emulator.api_key,
        "--out", str(tmp_path), "--poll-initial", "0.005", "--poll-max", "0.02",
    ]  # fmt: skip
    untrusted = await anyio.run_process(command, check=False)
    assert untrusted.returncode == 1
    assert b"--ca-bundle /path/to/ca.pem" in untrusted.stderr
    assert b"Session(" not in untrusted.stderr  # CLI users are told flags, not arguments
    done = await anyio.run_process(
        [*command, "--ca-bundle", str(ca_bundle), "--proxy", forward_proxy.url], check=False
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.decode().split()[0]).read_bytes().startswith(b"\x89PNG")
    assert await forward_proxy.wait_for_tunnel(api) >= 1
    assert forward_proxy.password.encode() not in done.stderr + untrusted.stderr
