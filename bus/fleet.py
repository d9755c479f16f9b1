"""The worker fleet: each live worker's heartbeat, the value of its key in the ``af_workers`` bucket.

A worker puts its heartbeat every ``BEAT_SECONDS`` under ``<tenant>.<worker_id>`` (sooner when the tasks
it holds change, at most every ``MIN_BEAT_SECONDS``) and deletes it when it stops; the bucket's TTL (three
beats) drops a worker that died without saying so. The control plane reads the fleet as the heartbeats
present now (``members``), or follows it (``watch``) and asks whether a silent worker's heartbeat has expired
(``status``). Both sides are written here, so that the key, the interval and the value's type cannot drift
apart.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Literal

import msgspec
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, NoKeysError, NotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from bus import subjects
from bus.connection import Bus
from bus.messages import Heartbeat, decode, encode

log = logging.getLogger(__name__)

BEAT_SECONDS = 5.0
MIN_BEAT_SECONDS = 1.0
"""The shortest gap between two heartbeats of a worker whose held tasks keep changing."""
TTL_SECONDS = 3 * BEAT_SECONDS
"""A worker whose heartbeats stopped (it died) leaves the fleet this long after its last one."""


class Fleet:
    """The ``af_workers`` bucket, seen by a worker (``beat``, ``leave``) or the control plane (``members``)."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket

    @classmethod
    async def open(cls, bus: Bus, replicas: int = 1) -> "Fleet":
        """The bucket, created (with ``replicas`` copies) if it is not there yet (``bus.streams.ensure_streams``
        creates it first)."""
        try:
            return cls(await bus.jetstream.key_value(subjects.WORKERS_BUCKET))
        except NotFoundError:
            return cls(
                await bus.jetstream.create_key_value(
                    KeyValueConfig(bucket=subjects.WORKERS_BUCKET, history=1, ttl=TTL_SECONDS, replicas=replicas)
                )
            )

    async def put(self, beat: Heartbeat) -> None:
        """Record one heartbeat (the worker is alive now)."""
        await self._bucket.put(subjects.worker_key(beat.tenant, beat.worker_id), encode(beat))

    async def beat(self, current: Callable[[], Heartbeat], changed: asyncio.Event) -> None:
        """Put ``current()`` every BEAT_SECONDS, or MIN_BEAT_SECONDS after the last one once ``changed`` is
        set (the worker took or let go of a task), until cancelled; a put that fails is logged and the next
        one tried on time (NATS may be restarting)."""
        while True:
            changed.clear()
            try:
                await self.put(current())
            except Exception as error:
                log.warning("heartbeat failed: %s", error)
            await asyncio.sleep(MIN_BEAT_SECONDS)
            # asyncio.timeout, not wait_for: in Python 3.11 wait_for can lose a cancel that comes as the event
            # is set, and the worker's stop would wait for ever on this loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BEAT_SECONDS - MIN_BEAT_SECONDS):
                    await changed.wait()

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

    async def watch(self) -> AsyncIterator[tuple[str, Heartbeat | None]]:
        """The fleet's heartbeats as they are put: first the latest of each worker present, then every new
        one, as ``(key, heartbeat)``; ``(key, None)`` when a stopping worker leaves. An expiry is not told:
        a worker silent for TTL_SECONDS is asked about with ``status``."""
        watcher = await self._bucket.watchall()
        try:
            async for entry in watcher:
                if entry is None:
                    continue  # the end of what the bucket held when the watch began
                if entry.operation in (KV_DEL, KV_PURGE):
                    yield entry.key, None
                elif entry.value:
                    try:
                        yield entry.key, decode(entry.value, Heartbeat)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        log.warning("ignoring a malformed heartbeat under %s", entry.key)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]

    async def status(self, key: str) -> Heartbeat | Literal["expired", "left"]:
        """What the bucket holds under ``key`` now: the worker's heartbeat if it is alive, ``expired`` if its
        heartbeat expired (it died without saying so), ``left`` if it stopped and deleted its entry."""
        try:
            entry = await self._bucket.get(key)
        except KeyNotFoundError as missing:
            # A deleted key is told apart by its delete marker, which nats-py passes along as ``op``.
            return "left" if missing.op in (KV_DEL, KV_PURGE) else "expired"
        try:
            return decode(entry.value or b"", Heartbeat)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return "expired"
