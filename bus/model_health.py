"""Model deployments' health, shared by every control plane: the ``af_models`` key-value bucket.

Two kinds of keys, both under the deployment's scope (a tenant, or ``_`` for the platform) and name:

- ``h.<scope>.<name>``: its ``ModelHealth`` (consecutive failures, cool-down until when and why), changed
  by compare-and-set so that two control planes failing it at once both count;
- ``s.<source>.<scope>.<name>``: one control plane's ``ModelStats`` of the last minute, put every few
  seconds by that control plane (``source``) alone, and deleted when it stops.

Each control plane mirrors the whole bucket in memory through a watch, so that routing reads no network.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import msgspec
from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from bus import subjects
from bus.connection import Bus
from bus.messages import ModelHealth, ModelStats, decode, encode

log = logging.getLogger(__name__)

PLATFORM_SCOPE = "_"
"""The key token of platform-wide deployments (``*`` may not appear in a key)."""
_KV_DELETES = ("DEL", "PURGE")
_RETRY_SECONDS = 1.0


def deployment_key(scope: str, name: str) -> str:
    """``<scope>.<name>``: a tenant (checked) or ``*`` for the platform, and the deployment's name."""
    token = PLATFORM_SCOPE if scope == "*" else subjects.check_name("tenant", scope)
    return f"{token}.{name}"


class HealthBucket:
    """The ``af_models`` bucket."""

    __slots__ = ("_bucket",)

    def __init__(self, bucket: KeyValue) -> None:
        self._bucket = bucket

    @classmethod
    async def open(cls, bus: Bus, replicas: int = 1) -> "HealthBucket":
        """The bucket, created (with ``replicas`` copies) if it is not there yet (``bus.streams.ensure_streams``
        creates it first)."""
        try:
            return cls(await bus.jetstream.key_value(subjects.MODELS_BUCKET))
        except NotFoundError:
            config = KeyValueConfig(bucket=subjects.MODELS_BUCKET, history=1, replicas=replicas)
            return cls(await bus.jetstream.create_key_value(config))

    async def change(self, key: str, change: Callable[[ModelHealth], ModelHealth | None]) -> ModelHealth:
        """Apply ``change`` to the deployment's current health (a default one if none is stored) until no
        other control plane changed it meanwhile; ``change`` answering None leaves it as it is."""
        while True:
            try:
                entry = await self._bucket.get(f"h.{key}")
                current, revision = decode(entry.value or b"", ModelHealth), entry.revision
            except KeyNotFoundError:
                current, revision = ModelHealth(), 0
            except (msgspec.DecodeError, msgspec.ValidationError):
                current, revision = ModelHealth(), entry.revision
            changed = change(current)
            if changed is None:
                return current
            try:
                await self._bucket.update(f"h.{key}", encode(changed), last=revision)
            except KeyWrongLastSequenceError:
                continue
            return changed

    async def put_stats(self, source: str, key: str, stats: ModelStats) -> None:
        await self._bucket.put(f"s.{source}.{key}", encode(stats))

    async def drop_stats(self, source: str, keys: Iterable[str]) -> None:
        for key in keys:
            with contextlib.suppress(KeyNotFoundError):
                await self._bucket.delete(f"s.{source}.{key}")

    async def mirror(
        self,
        on_health: Callable[[str, ModelHealth | None], None],
        on_stats: Callable[[str, str, ModelStats | None], None],
    ) -> None:
        """Call ``on_health(key, health)`` and ``on_stats(source, key, stats)`` for every entry there is and
        every change to come (None: deleted), until cancelled; a lost watch is started again."""
        while True:
            try:
                watcher = await self._bucket.watchall()
            except NatsError as error:
                log.warning("cannot watch the model health bucket: %s", error)
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            try:
                async for entry in watcher:
                    if entry is None:
                        continue  # the marker after the entries present when the watch began
                    _deliver(entry, on_health, on_stats)
            except NatsError as error:
                log.warning("the model health watch stopped: %s", error)
            finally:
                with contextlib.suppress(Exception):
                    await watcher.stop()  # type: ignore[no-untyped-call]
            await asyncio.sleep(_RETRY_SECONDS)


def _deliver(
    entry: KeyValue.Entry,
    on_health: Callable[[str, ModelHealth | None], None],
    on_stats: Callable[[str, str, ModelStats | None], None],
) -> None:
    kind, _, rest = entry.key.partition(".")
    value = None if entry.operation in _KV_DELETES else entry.value
    try:
        if kind == "h":
            on_health(rest, decode(value, ModelHealth) if value else None)
        elif kind == "s":
            source, _, key = rest.partition(".")
            on_stats(source, key, decode(value, ModelStats) if value else None)
    except (msgspec.DecodeError, msgspec.ValidationError):
        log.warning("ignoring a malformed entry %s in the model health bucket", entry.key)
