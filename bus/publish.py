"""Publishing: every message carries a ``Nats-Msg-Id`` (stream de-duplication) and a ``traceparent``."""

import asyncio
import os
from collections.abc import Sequence

from bus.connection import Bus


def new_traceparent() -> str:
    """A fresh W3C trace context (version 00, sampled)."""
    ids = os.urandom(24).hex()
    return f"00-{ids[:32]}-{ids[32:]}-01"


def headers(msg_id: str, traceparent: str | None) -> dict[str, str]:
    return {"Nats-Msg-Id": msg_id, "traceparent": traceparent or new_traceparent()}


class Outgoing:
    """One message to publish: subject, payload and the id the stream de-duplicates by."""

    __slots__ = ("msg_id", "payload", "subject", "traceparent")

    def __init__(self, subject: str, payload: bytes, msg_id: str, traceparent: str | None = None) -> None:
        self.subject = subject
        self.payload = payload
        self.msg_id = msg_id
        self.traceparent = traceparent


async def publish(bus: Bus, message: Outgoing) -> None:
    """Publish to a stream and wait for its acknowledgement (the message is stored)."""
    await bus.jetstream.publish(message.subject, message.payload, headers=headers(message.msg_id, message.traceparent))


async def publish_all(bus: Bus, messages: Sequence[Outgoing]) -> None:
    """Publish many messages pipelined (all in flight at once) and wait until every one is stored."""
    await asyncio.gather(*(publish(bus, m) for m in messages))


async def notify(bus: Bus, message: Outgoing) -> None:
    """Publish without waiting for the stream's acknowledgement: for events whose state is already durable,
    and for core-NATS notices that no stream keeps."""
    await bus.client.publish(message.subject, message.payload, headers=headers(message.msg_id, message.traceparent))
