"""The worker fleet: each live worker's heartbeat, the value of its key in the ``af_workers`` bucket.

A worker puts its heartbeat every ``BEAT_SECONDS`` under ``<tenant>.<worker_id>`` and deletes it when it
stops; the bucket's TTL (three beats) drops a worker that died without saying so. The control plane reads
the fleet as the heartbeats present now. Both sides are written here, so that the key, the interval and
the value's type cannot drift apart.
"""

import asyncio
import logging
from collections.abc import Callable

import msgspec
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KeyValue

from bus import subjects
from bus.connection import Bus
from bus.messages import Heartbeat, decode, encode

log = logging.getLogger(__name__)

BEAT_SECONDS = 5.0
TTL_SECONDS = 3 * BEAT_SECONDS
"""A worker whose heartbeats stopped (it died) leaves the fleet this long after its last one."""


class Fleet:
    """The ``af_workers`` bucket, seen by a worker (``beat``, ``leave``) or the control plane (``members``)."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket

    @classmethod
    async def open(cls, bus: Bus) -> "Fleet":
        """The bucket, created if it is not there yet (``bus.streams.ensure_streams`` creates it first)."""
        try:
            return cls(await bus.jetstream.key_value(subjects.WORKERS_BUCKET))
        except NotFoundError:
            return cls(
                await bus.jetstream.create_key_value(
                    KeyValueConfig(bucket=subjects.WORKERS_BUCKET, history=1, ttl=TTL_SECONDS)
                )
            )

    async def put(self, beat: Heartbeat) -> None:
        """Record one heartbeat (the worker is alive now)."""
        await self._bucket.put(subjects.worker_key(beat.tenant, beat.worker_id), encode(beat))

    async def beat(self, current: Callable[[], Heartbeat]) -> None:
        """Put ``current()`` every BEAT_SECONDS until cancelled; a put that fails is logged and the next one
        tried on time (NATS may be restarting)."""
        while True:
            try:
                await self.put(current())
            except Exception as error:
                log.warning("heartbeat failed: %s", error)
            await asyncio.sleep(BEAT_SECONDS)

    async def leave(self, tenant: str, worker_id: str) -> None:
        """Remove a stopping worker from the fleet at once, rather than when its heartbeat expires."""
        await self._bucket.delete(subjects.worker_key(tenant, worker_id))

    async def members(self) -> list[Heartbeat]:
        """The heartbeats of the live workers, by worker id; a malformed one is logged and left out."""
        try:
            keys = await self._bucket.keys()
        except NoKeysError:
            return []
        beats = []
        for key in keys:
            try:
                entry = await self._bucket.get(key)
            except KeyNotFoundError:
                continue  # the worker stopped between the listing and the read
            if entry.value:
                try:
                    beats.append(decode(entry.value, Heartbeat))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    log.warning("ignoring a malformed heartbeat under %s", key)
        return sorted(beats, key=lambda b: b.worker_id)
