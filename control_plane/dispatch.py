"""Dispatch: tasks recorded in PostgreSQL go onto the bus, and the outbox makes sure none is left behind.

A task is first committed (``published = false``), then published with ``Nats-Msg-Id = <task>:<attempt>``,
then marked published. If the control plane dies in between, the relay publishes it again; the stream's
duplicate window drops the second copy if the first had arrived.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bus import subjects
from bus.messages import CancelTasks, Task, encode
from bus.publish import Outgoing, notify, publish_all
from control_plane.background import Background
from control_plane.catalog import Catalog, Tool
from registry import runs
from registry.db import Pool

log = logging.getLogger(__name__)

RELAY_INTERVAL_SECONDS = 5.0
RELAY_AGE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A task to publish, with the tool that runs it."""

    tenant: str
    run_id: str
    task_id: str
    attempt: int
    step: str
    queue: str
    tool: Tool
    input: str

    def outgoing(self) -> Outgoing:
        task = Task(
            tenant=self.tenant,
            run_id=self.run_id,
            task_id=self.task_id,
            attempt=self.attempt,
            step=self.step,
            tool=self.tool.ref,
            runtime=self.tool.runtime,
            limits=self.tool.limits,
            network="egress" if self.tool.network == "egress" else "none",
            input=msgspec.Raw(self.input.encode()),
            enqueued_at=time.time(),
        )
        return Outgoing(subjects.tasks(self.tenant, self.queue), encode(task), f"{self.task_id}:{self.attempt}")


class Dispatcher:
    def __init__(self, pool: Pool, nc: NATS, js: JetStreamContext, catalog: Catalog) -> None:
        self._pool = pool
        self._nc = nc
        self._js = js
        self._catalog = catalog
        self._published: list[str] = []
        self._has_published = asyncio.Event()
        self._retries = Background("publishing a retry (the relay publishes it again)")
        self._timers: set[asyncio.TimerHandle] = set()

    async def publish_tasks(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish and wait until the stream stored every task, then mark them published (in the background)."""
        if not dispatches:
            return
        await publish_all(self._js, [d.outgoing() for d in dispatches])
        self._published.extend(d.task_id for d in dispatches)
        self._has_published.set()

    async def publish_events(self, messages: Iterable[Outgoing]) -> None:
        """Events of committed state: published without waiting; watchers also read them from PostgreSQL."""
        for message in messages:
            await notify(self._nc, message)

    async def cancel_tasks(self, tenant: str, run_id: str, task_ids: Sequence[str]) -> None:
        """Tell the workers running these (committed as cancelled) tasks to stop them."""
        notice = CancelTasks(tenant=tenant, run_id=run_id, task_ids=tuple(task_ids))
        await notify(self._nc, Outgoing(subjects.cancels(tenant), encode(notice), f"cancel:{run_id}:{task_ids[0]}"))

    def publish_later(self, dispatch: Dispatch, delay: float) -> None:
        """Publish after ``delay`` seconds (a retry's backoff). The timer lives in memory only: if this
        process stops first, the relay publishes the task once its ``not_before`` has passed."""
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, lambda: self._retries.spawn(self.publish_tasks([dispatch])))
        self._timers.add(handle)
        loop.call_later(delay + 1, self._timers.discard, handle)

    async def mark_published(self, stop: asyncio.Event) -> None:
        """Record published tasks: all that gathered since the last write, in one statement."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._has_published.wait(), 1.0)
            self._has_published.clear()
            await self.flush_marks()

    async def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        await self._retries.close()
        await self.flush_marks()

    async def flush_marks(self) -> None:
        batch, self._published = self._published, []
        if not batch:
            return
        try:
            await runs.mark_published(self._pool, batch)
        except Exception as error:
            log.warning("marking %d task(s) published failed; the relay publishes them again: %s", len(batch), error)

    async def relay(self, stop: asyncio.Event) -> None:
        """The outbox relay: publish queued tasks that were committed but never marked published."""
        while not stop.is_set():
            try:
                await self.relay_once()
            except Exception as error:
                log.warning("outbox relay pass failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RELAY_INTERVAL_SECONDS)

    async def relay_once(self, older_than: float = RELAY_AGE_SECONDS) -> int:
        pending = await runs.unpublished_tasks(self._pool, older_than, 1000)
        dispatches = []
        for task in pending:
            tool = await self._catalog.tool(task.tenant, task.tool_name, task.tool_version)
            dispatches.append(
                Dispatch(task.tenant, task.run_id, task.id, task.attempt, task.step, task.queue, tool, task.input)
            )
        if dispatches:
            log.info("outbox relay: publishing %d task(s) left unpublished", len(dispatches))
            await self.publish_tasks(dispatches)
        return len(dispatches)
