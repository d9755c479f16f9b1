"""Consuming: durable pull consumers, and the deliveries they hand out.

A ``Delivery`` is one message handed to this process by JetStream. Whoever holds it settles it exactly
once: ``ack`` after its effect is durable, ``nak`` to have it delivered again (now or after a delay),
``term`` for a message that can never be processed; ``in_progress`` meanwhile keeps it from being
redelivered while the work goes on past the consumer's ack wait.
"""

import asyncio
import logging

from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.errors import ServiceUnavailableError

from bus.connection import Bus

log = logging.getLogger(__name__)

UNAVAILABLE_PAUSE_SECONDS = 0.5


ABANDON_GRACE_SECONDS = 0.25
"""How long a pull cut short by ``stop`` still waits for what the server is already sending."""


class Delivery:
    """One JetStream message delivered to this process. Hashable by identity."""

    __slots__ = ("_msg",)

    def __init__(self, msg: Msg) -> None:
        self._msg = msg

    @property
    def subject(self) -> str:
        return self._msg.subject

    @property
    def data(self) -> bytes:
        return self._msg.data

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context the publisher sent along, if any."""
        headers = self._msg.headers
        return headers.get("traceparent") if headers else None

    @property
    def deliveries(self) -> int:
        """How many times JetStream has delivered this message (more than 1: a holder died or handed it back)."""
        try:
            return int(self._msg.metadata.num_delivered)
        except Exception:
            return 1  # not a JetStream delivery's reply subject: nothing to tell

    @property
    def stream_seq(self) -> int:
        """The message's sequence in its stream (0: not a JetStream delivery)."""
        try:
            return int(self._msg.metadata.sequence.stream)
        except Exception:
            return 0

    @property
    def stored_at(self) -> float | None:
        """When the stream stored the message (the server's clock, seconds since the epoch)."""
        try:
            return self._msg.metadata.timestamp.timestamp()
        except Exception:
            return None

    async def ack(self) -> None:
        """Done with: the stream forgets it (on a work queue) and never delivers it again."""
        await self._msg.ack()

    async def nak(self, delay: float | None = None) -> None:
        """Not done: deliver it again, at once or after ``delay`` seconds."""
        await self._msg.nak(delay=delay)

    async def term(self) -> None:
        """Never deliverable (malformed, or not for this consumer): the stream stops delivering it."""
        await self._msg.term()

    async def in_progress(self) -> None:
        """Still being worked on: restart the consumer's ack wait for it."""
        await self._msg.in_progress()


class Consumer:
    """A durable pull consumer this process is bound to."""

    __slots__ = ("_sub",)

    def __init__(self, sub: JetStreamContext.PullSubscription) -> None:
        self._sub = sub

    async def pull(self, batch: int, wait: float, *, stop: asyncio.Event | None = None) -> list[Delivery]:
        """Up to ``batch`` messages: returns as soon as any are there, or [] after ``wait`` seconds, or [] as
        soon as ``stop`` is set (a shutdown need not wait out the pull; what the server sends to the abandoned
        request is never acknowledged, so it is delivered again)."""
        fetching = asyncio.ensure_future(self._sub.fetch(batch=batch, timeout=wait))
        if stop is not None:
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({fetching, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not fetching.done():
                # What the server has already sent to this request is taken rather than left to be delivered
                # again only after the ack wait: a draining worker finishes it.
                await asyncio.wait({fetching}, timeout=ABANDON_GRACE_SECONDS)
            if not fetching.done():
                fetching.cancel()
                await asyncio.gather(fetching, return_exceptions=True)
                return []
        try:
            return [Delivery(msg) for msg in await fetching]
        except (TimeoutError, NatsTimeout):
            return []
        except (ServiceUnavailableError, NoRespondersError) as error:
            # A NATS cluster that lost the consumer's leader answers 503 until it has elected another.
            log.info("JetStream is electing a consumer leader (%s); pulling again shortly", type(error).__name__)
            await asyncio.sleep(UNAVAILABLE_PAUSE_SECONDS)
            return []


async def bind(bus: Bus, stream: str, durable: str) -> Consumer:
    """Bind to an existing durable consumer of ``stream`` (``bus.streams`` creates them)."""
    return Consumer(await bus.jetstream.pull_subscribe_bind(durable=durable, stream=stream, pending_msgs_limit=-1))
