"""The connection to NATS: one ``Bus`` per process, holding the client and its JetStream context.

Every other module of ``bus`` takes a ``Bus``; no package outside ``bus`` sees a nats-py type. ``connect``
reconnects for ever (a restarted nats-server is picked up again) but stops at once on refused credentials.
"""

import asyncio
import logging
import time
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

log = logging.getLogger(__name__)

JETSTREAM_TIMEOUT_SECONDS = 5.0
"""How long a JetStream request (publish acknowledgement, consumer or stream info) waits for its answer."""


class NotAuthorized(RuntimeError):
    """The NATS server refused this process's credentials."""


class Bus:
    """A process's connection to NATS.

    ``client`` and ``jetstream`` are nats-py's: for the modules of ``bus`` (and tests that speak raw NATS),
    never for the packages that use the bus.
    """

    __slots__ = ("client", "connected_at", "jetstream")

    def __init__(self, client: NATS, timeout: float = JETSTREAM_TIMEOUT_SECONDS) -> None:
        self.client = client
        self.jetstream: JetStreamContext = client.jetstream(timeout=timeout)
        self.connected_at = time.monotonic()
        """When this connection was last (re)established (``time.monotonic``)."""

    @property
    def is_connected(self) -> bool:
        return bool(self.client.is_connected)

    def connected_for(self) -> float:
        """Seconds this process has been connected without a break (0 while disconnected)."""
        return time.monotonic() - self.connected_at if self.is_connected else 0.0

    async def close(self) -> None:
        """Send what is buffered, then close (no drain: a pull request in flight would be waited out)."""
        await self.client.flush()
        await self.client.close()


def inbox_prefix(user: str) -> str:
    """Where a user's replies arrive: under its own name, so that its permissions can let it read its own
    replies and nobody else's."""
    return f"_INBOX.{user}" if user else "_INBOX"


async def connect(url: str, name: str, user: str = "", password: str = "") -> Bus:
    """Connect with unlimited reconnects, so a restarted nats-server is picked up again.

    ``url`` may name several servers of one cluster, comma-separated: any of them serves, and a lost one is
    replaced by another (the servers the cluster announces are tried too).

    ``user`` and ``password`` are this process's NATS identity (``AF_NATS_USER``, ``AF_NATS_PASSWORD``);
    empty for a server without authentication. Refused credentials raise NotAuthorized instead of being
    tried again for ever.
    """
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    bus: Bus | None = None

    async def on_disconnected() -> None:
        if connecting.done() and connecting.result().is_closed:
            return  # our own Bus.close, not a lost connection
        log.warning("disconnected from NATS at %s", url)

    async def on_reconnected() -> None:
        log.info("reconnected to NATS at %s", url)
        if bus is not None:
            bus.connected_at = time.monotonic()

    async def on_error(error: Exception) -> None:
        if "authorization violation" in str(error).lower() and not refused.done():
            refused.set_result(None)
        log.warning("NATS error: %s", error)

    connecting = asyncio.ensure_future(
        nats.connect(
            [server.strip() for server in url.split(",")],
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
            error_cb=on_error,
            pending_size=64 * 1024 * 1024,
            user=user or None,
            password=password or None,
            inbox_prefix=inbox_prefix(user),
        )
    )
    either: set[asyncio.Future[Any]] = {connecting, refused}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not connecting.done():
        connecting.cancel()
        who = f"user {user!r}" if user else "a connection without credentials"
        raise NotAuthorized(f"NATS at {url} refused {who} (AF_NATS_USER, AF_NATS_PASSWORD)")
    bus = Bus(connecting.result())
    return bus
