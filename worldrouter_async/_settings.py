"""Where a session's API key and base URL come from, and the checks they must pass.

Arguments win over the environment (``WORLDROUTER_API_KEY``, ``WORLDROUTER_BASE_URL``); a
key or URL that cannot work is refused when the `Session` is made, with the fix named,
before any request is sent.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Final

from yarl import URL

from ._api import Secret
from ._errors import ConfigurationError

DEFAULT_BASE_URL: Final = "https://inference-api-pre-d80ca3.worldrouter.ai/v1"
API_KEY_ENV: Final = "WORLDROUTER_API_KEY"
BASE_URL_ENV: Final = "WORLDROUTER_BASE_URL"


def resolve_api_key(api_key: str | None) -> Secret:
    """`api_key`, else the environment's, checked and wrapped so no repr shows it."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
    if key is None:
        raise ConfigurationError(
            f"no API key: pass Session(api_key=...) or set the {API_KEY_ENV} environment variable"
        )
    if not key.strip():
        raise ConfigurationError(f"the API key is empty; set {API_KEY_ENV} to your WorldRouter key")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise ConfigurationError(
            "the API key contains control characters (a stray newline?); paste it again"
        )
    return Secret(key)


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and loopback addresses, where plain http stays on the machine."""
    if host is None:
        return False
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_base_url(base_url: str | None, *, allow_insecure: bool) -> str:
    """`base_url`, else the environment's, else the documented URL; without a trailing slash.

    Refused: anything but http(s), credentials in the URL, a query or fragment, and plain
    http to a non-loopback host unless `allow_insecure` (the key would travel in clear).
    """
    raw = base_url if base_url is not None else os.environ.get(BASE_URL_ENV, DEFAULT_BASE_URL)
    url = URL(raw)
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigurationError(
            f"base_url must be an http(s) URL such as {DEFAULT_BASE_URL!r} (got {raw!r})"
        )
    if url.user is not None or url.password is not None:
        raise ConfigurationError(
            f"base_url must not contain credentials (got a URL with '@' for host {url.host!r}); "
            "pass the API key as api_key="
        )
    if url.scheme == "http" and not allow_insecure and not is_loopback(url.host):
        raise ConfigurationError(
            f"refusing plain http:// to {url.host!r}: the API key would travel unencrypted. "
            "Use https://, or pass allow_insecure=True for a trusted network"
        )
    if url.query_string or url.fragment:
        raise ConfigurationError(f"base_url must not have a query or fragment (got {raw!r})")
    return str(url).rstrip("/")
