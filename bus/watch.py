"""Live messages on core NATS: a watch that says "look again", and a listener that handles each notice.

Neither is durable: a message published while nobody listens, or while the connection is down, is gone.
They carry news of state kept elsewhere (a run's committed events, tasks committed as cancelled), so a
lost one must cost little: a watcher reads that state again on each notice and at least every ``every``
seconds (one interval, never a gap); a worker that misses a cancel notice finishes the task, and its
result is ignored.
"""

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import DeliverPolicy

from bus.connection import Bus


class WatchLost(RuntimeError):
    """The connection a watch listened on is closed: no notice can arrive any more."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One message received on core NATS."""

    subject: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Look:
    """One item of ``watch_carrying``: the notices since the last one, and the carried messages that came."""

    arrived: int
    """Messages on the watched subject since the last look (0: the interval passed)."""
    carried: tuple[bytes, ...]
    """The payloads that arrived on the carried subject since the last look, in the order they came."""


async def watch(bus: Bus, subject: str, every: float) -> AsyncGenerator[int, None]:
    """Yield once at once, then whenever messages on ``subject`` arrived or ``every`` seconds passed without.

    Each item is the number of messages that arrived since the last one (0: the interval passed): a burst
    asks for one look. Listening starts before the first item, so nothing published after it is missed.
    While NATS is reconnecting the items keep coming every ``every`` seconds; once the connection is
    closed, WatchLost is raised. Close it (``contextlib.aclosing``) to stop listening.
    """
    async with contextlib.aclosing(watch_carrying(bus, subject, every, None)) as looks:
        async for look in looks:
            yield look.arrived


async def watch_carrying(bus: Bus, subject: str, every: float, carried: str | None) -> AsyncGenerator[Look, None]:
    """``watch``, which also hands over the payloads of the messages on ``carried`` (if not None), a subject
    a stream keeps: those stored already, then each new one as it comes (an ordered consumer of its own, gone
    with the watch). Each wakes the watcher too, which gets them in its next ``Look``."""
    arrived = 0
    payloads: list[bytes] = []
    wake = asyncio.Event()

    async def on_notice(_: Msg) -> None:
        nonlocal arrived
        arrived += 1
        wake.set()

    async def on_carried(msg: Msg) -> None:
        payloads.append(msg.data)
        wake.set()

    subscriptions = []
    try:
        try:
            subscriptions.append(await bus.client.subscribe(subject, cb=on_notice))
            if carried is not None:
                subscriptions.append(
                    await bus.jetstream.subscribe(
                        carried, cb=on_carried, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
                    )
                )
        except NatsError as error:
            raise WatchLost(f"cannot watch {subject}: {error!r}") from error
        yield Look(arrived=0, carried=())
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), every)
            if bus.client.is_closed:
                raise WatchLost(f"the connection closed while watching {subject}")
            wake.clear()
            look = Look(arrived=arrived, carried=tuple(payloads))
            arrived = 0
            payloads.clear()
            yield look
    finally:
        for subscription in subscriptions:
            with contextlib.suppress(NatsError):
                await subscription.unsubscribe()


async def listen(bus: Bus, subject: str, handler: Callable[[Notice], Awaitable[None]]) -> None:
    """Call ``handler`` with each message on ``subject``, one after another, until the connection closes.

    ``handler`` runs on the subscription's own task: it must not block, and what it raises is logged by the
    connection and does not stop the listening.
    """

    async def on_msg(msg: Msg) -> None:
        await handler(Notice(msg.subject, msg.data))

    await bus.client.subscribe(subject, cb=on_msg)
