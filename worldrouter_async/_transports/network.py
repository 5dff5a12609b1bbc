"""Network settings: proxies (with hidden credentials), ``NO_PROXY`` and TLS trust.

`NetworkSettings` holds what the user chose (``proxy``, ``trust_env``, ``verify``); when a
session opens, `NetworkSettings.resolve` reads the environment (``HTTPS_PROXY``,
``HTTP_PROXY``, ``NO_PROXY``, ``SSL_CERT_FILE``, ``SSL_CERT_DIR``) once and gives a `Network`:
the TLS context and the proxy for each URL, from which `_transports.aiohttp` builds the API
pools and the download pool alike.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from yarl import URL

from .._errors import ConfigurationError, InsecureConnectionWarning
from .._logs import logger

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
"""What ``verify=`` accepts: True, a CA bundle file or directory, an SSLContext, or False."""


def redact(url: URL) -> str:
    """`url` with any user and password replaced by ``***``, for messages and reprs."""
    if url.user is None and url.password is None:
        return str(url)
    return str(url.with_user(None).with_password(None)).replace("://", "://***@", 1)


class Proxy:
    """A proxy URL whose credentials never show in a repr, str, log line or error."""

    __slots__ = ("_shown", "headers", "url")

    def __init__(self, raw: str, *, source: str) -> None:
        url = URL(raw if "://" in raw else f"http://{raw}")  # "proxy:3128", as curl reads it
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(
                f"{source} must be an http:// or https:// proxy URL such as "
                f"'http://proxy.example:3128' (got {redact(url)!r})"
            )
        self._shown = redact(url.with_path(""))
        #: The proxy without credentials: what aiohttp (and its error messages) see.
        self.url: Final = url.with_user(None).with_password(None).with_path("")
        #: Proxy-Authorization, sent to the proxy only (never to the API or storage).
        self.headers: Final[Mapping[str, str]] = (
            {"Proxy-Authorization": _basic(url.user or "", url.password or "")}
            if url.user is not None
            else {}
        )

    def __repr__(self) -> str:
        return f"Proxy({str(self)!r})"

    def __str__(self) -> str:
        return self._shown


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class NetworkSettings:
    """The ``proxy``, ``trust_env`` and ``verify`` options of a session, checked when made."""

    __slots__ = ("proxy", "trust_env", "verify")

    def __init__(self, *, proxy: str | None, trust_env: bool, verify: Verify) -> None:
        self.proxy: Final = None if proxy is None else Proxy(proxy, source="proxy")
        self.trust_env: Final = trust_env
        if not isinstance(verify, bool | str | os.PathLike | ssl.SSLContext):
            raise ConfigurationError(
                "verify must be True, False, a CA bundle path or an ssl.SSLContext "
                f"(got {type(verify).__name__})"
            )
        if verify is False:
            message = (
                "verify=False turns off TLS certificate checks: anyone on the network path can "
                "read your API key and answers. Trust your CA with verify='/path/to/ca.pem'"
            )
            warnings.warn(message, InsecureConnectionWarning, stacklevel=3)
            logger.warning(message)
        self.verify: Final = verify

    def __repr__(self) -> str:
        return f"<NetworkSettings proxy={self.proxy} trust_env={self.trust_env}>"

    def resolve(self) -> Network:
        """Read the environment now and build the TLS context: call when a session opens."""
        env_proxies: dict[str, Proxy | None] = {}
        no_proxy: tuple[str, ...] = ()
        if self.proxy is None and self.trust_env:
            found = urllib.request.getproxies_environment()
            no_proxy = tuple(
                entry.strip().lstrip(".").lower()
                for entry in found.get("no", "").split(",")
                if entry.strip()
            )
            for scheme in ("http", "https"):
                if found.get(scheme):
                    env_proxies[scheme] = Proxy(found[scheme], source=f"{scheme.upper()}_PROXY")
        return Network(
            ssl=self._ssl_context(), proxy=self.proxy, env_proxies=env_proxies, no_proxy=no_proxy
        )

    def _ssl_context(self) -> ssl.SSLContext | bool:
        verify = self.verify
        if verify is False:
            return False
        if isinstance(verify, ssl.SSLContext):
            return verify
        if verify is True:
            cafile = os.environ.get("SSL_CERT_FILE") if self.trust_env else None
            capath = os.environ.get("SSL_CERT_DIR") if self.trust_env else None
            if not cafile and not capath:
                return _system_context()
            return _context_from(
                cafile or None, capath or None, source="SSL_CERT_FILE/SSL_CERT_DIR"
            )
        path = Path(verify)
        if path.is_dir():
            return _context_from(None, str(path), source="verify")
        return _context_from(str(path), None, source="verify")


@functools.cache
def _system_context() -> ssl.SSLContext:
    """The system's CAs from OpenSSL's built-in paths, never from SSL_CERT_FILE/SSL_CERT_DIR.

    Built on the first session that needs it and shared, as aiohttp shares its default:
    loading a system bundle costs tens of milliseconds.
    """
    paths = ssl.get_default_verify_paths()
    cafile = paths.openssl_cafile if os.path.isfile(paths.openssl_cafile) else None
    capath = paths.openssl_capath if os.path.isdir(paths.openssl_capath) else None
    if cafile is None and capath is None:  # no OpenSSL store (Windows): the system's own
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=cafile, capath=capath)


def _context_from(cafile: str | None, capath: str | None, *, source: str) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load CA certificates from {cafile or capath!r} ({source}): {exc}; "
            "point it at a PEM file (or a c_rehash'ed directory) of CA certificates"
        ) from None


class Network:
    """Network settings resolved when a session opened: the TLS context and the proxies."""

    __slots__ = ("_env_proxies", "_no_proxy", "proxy", "ssl")

    def __init__(
        self,
        *,
        ssl: ssl.SSLContext | bool,
        proxy: Proxy | None,
        env_proxies: Mapping[str, Proxy | None],
        no_proxy: tuple[str, ...],
    ) -> None:
        self.ssl: Final = ssl
        self.proxy: Final = proxy
        self._env_proxies = env_proxies
        self._no_proxy = no_proxy

    def proxy_for(self, url: URL) -> Proxy | None:
        """The proxy a request to `url` goes through: ``proxy=``, else the environment's."""
        if self.proxy is not None:
            return self.proxy
        proxy = self._env_proxies.get(url.scheme)
        if proxy is None or not url.host:
            return None
        if self._no_proxy and _bypassed(url.host.lower(), url.port, self._no_proxy):
            return None
        return proxy


def _bypassed(host: str, port: int | None, no_proxy: tuple[str, ...]) -> bool:
    """Whether ``NO_PROXY`` names `host` (as curl reads it: ``*``, hosts, domain suffixes)."""
    host = host.strip("[]")
    for entry in no_proxy:
        if entry == "*":
            return True
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]")
        if host == name or host.endswith("." + name):
            return True
    return False
