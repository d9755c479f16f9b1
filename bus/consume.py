"""Consuming: connecting with reconnects, and pulling batches from durable consumers."""

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext

log = logging.getLogger(__name__)


def inbox_prefix(user: str) -> str:
    """Where a user's replies arrive: under its own name, so that its permissions can let it read its own
    replies and nobody else's."""
    return f"_INBOX.{user}" if user else "_INBOX"


class NotAuthorized(RuntimeError):
    """The NATS server refused this process's credentials."""


async def connect(url: str, name: str, user: str = "", password: str = "") -> NATS:
    """Connect with unlimited reconnects, so a restarted nats-server is picked up again.

    ``user`` and ``password`` are this process's NATS identity (``AF_NATS_USER``, ``AF_NATS_PASSWORD``);
    empty for a server without authentication. Refused credentials raise NotAuthorized instead of being
    tried again for ever.
    """
    refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_disconnected() -> None:
        log.warning("disconnected from NATS at %s", url)

    async def on_reconnected() -> None:
        log.info("reconnected to NATS at %s", url)

    async def on_error(error: Exception) -> None:
        if "authorization violation" in str(error).lower() and not refused.done():
            refused.set_result(None)
        log.warning("NATS error: %s", error)

    connecting = asyncio.ensure_future(
        nats.connect(
            url,
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
    return connecting.result()


async def bind_pull(js: JetStreamContext, stream: str, durable: str) -> JetStreamContext.PullSubscription:
    return await js.pull_subscribe_bind(durable=durable, stream=stream, pending_msgs_limit=-1)


async def pull(sub: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Msg]:
    """Up to ``batch`` messages: returns as soon as any are there, or [] after ``wait`` seconds."""
    try:
        return await sub.fetch(batch=batch, timeout=wait)
    except (TimeoutError, NatsTimeout):
        return []
