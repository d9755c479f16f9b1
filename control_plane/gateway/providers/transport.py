"""The providers' HTTP client: one aiohttp connection pool per control plane, and transport errors as
``Failure`` in one place.

aiohttp rather than httpx because this is the gateway's hot path: a call through it spends about a fifth of
httpx's CPU time per request (its parser is C), and the gateway's overhead per call is mostly this client.
Providers see only ``Http``: whole answers as ``Reply``, streams as lines.
"""

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp

from control_plane.gateway.failures import Failure

_ERROR_BYTES = 4096
"""Of an error answer, read for its message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    """Case-insensitive."""
    body: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Lines:
    """A streamed answer: its status and headers, its body line by line (an error's body as ``error_body``)."""

    status: int
    headers: Mapping[str, str]
    error_body: bytes
    lines: AsyncIterator[str]


def transport_failure(error: BaseException) -> Failure:
    if isinstance(error, TimeoutError):
        return Failure("timeout", "no answer in time")
    if isinstance(error, aiohttp.ClientPayloadError):
        return Failure("stream-cut", "the answer ended before its end")
    return Failure("refused", f"connection failed ({type(error).__name__}: {error})"[:300])


class Http:
    """Every provider's requests, over one pool."""

    def __init__(self) -> None:
        connector = aiohttp.TCPConnector(limit=1000, limit_per_host=0, keepalive_timeout=30)
        # Providers are third parties: no cookies kept, and an answer's JSON is decoded by msgspec, not here.
        self._session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())

    async def close(self) -> None:
        await self._session.close()

    async def post(self, url: str, body: bytes, headers: Mapping[str, str], *, seconds: float) -> Reply:
        """POST ``body`` (JSON) and read the whole answer within ``seconds``."""
        try:
            async with self._session.post(
                url, data=body, headers=_json(headers), timeout=aiohttp.ClientTimeout(total=seconds)
            ) as response:
                raw = await (response.content.read(_ERROR_BYTES) if response.status >= 400 else response.read())
                return Reply(status=response.status, headers=response.headers, body=raw)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_failure(error) from None

    @asynccontextmanager
    async def stream(
        self, url: str, body: bytes, headers: Mapping[str, str], *, seconds: float
    ) -> AsyncIterator[Lines]:
        """POST ``body`` and read the answer line by line: ``seconds`` to its headers, then between reads."""
        limits = aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)
        try:
            async with self._session.post(url, data=body, headers=_json(headers), timeout=limits) as response:
                error_body = await response.content.read(_ERROR_BYTES) if response.status >= 400 else b""
                yield Lines(
                    status=response.status, headers=response.headers, error_body=error_body, lines=_lines(response)
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            raise transport_failure(error) from None


def _json(headers: Mapping[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", **headers}


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The body's lines, however the network cut it (aiohttp's own readline refuses lines over 64 KiB)."""
    pending = b""
    try:
        async for chunk in response.content.iter_any():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode(errors="replace")
    except (aiohttp.ClientError, TimeoutError) as error:
        raise transport_failure(error) from None
    if pending:
        yield pending.rstrip(b"\r").decode(errors="replace")
