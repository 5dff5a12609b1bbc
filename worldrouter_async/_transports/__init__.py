"""The wire layer: the transport protocol (`base`), network settings (`network`) and the
aiohttp transport (`aiohttp`), the only module of the API path that imports aiohttp."""

from .base import AsyncTransport, WireRequest, WireResponse

__all__ = ["AsyncTransport", "WireRequest", "WireResponse"]
