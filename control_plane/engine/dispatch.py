"""Dispatch: tasks recorded in PostgreSQL go onto the bus, and the outbox makes sure none is left behind.

A task is first committed (``published = false``), then published with ``Nats-Msg-Id = <task>:<attempt>``,
then marked published. If the control plane dies in between, the relay publishes it again; the stream's
duplicate window drops the second copy if the first had arrived.

New tasks pass admission first (``control_plane.admission``): those over a tenant's or a queue's in-flight
limit are held in PostgreSQL and released, here, as earlier tasks finish. For a tenant with limits of its
own, every admission and release reads the tenant's ledger from PostgreSQL under its advisory lock
(``registry.limits.locked_ledger``), so that limits hold however many control planes admit at once.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import msgspec
from opentelemetry.trace import SpanKind

from bus import Bus, subjects, tracing
from bus.messages import CancelTasks, Task, encode
from bus.publish import Outgoing, notify, publish_all
from control_plane.catalog.resolver import Catalog, Tool
from control_plane.engine.admission import Admission
from control_plane.engine.background import Background
from registry import limits, runs
from registry.db import Pool

log = logging.getLogger(__name__)

RELAY_INTERVAL_SECONDS = 5.0
RELAY_AGE_SECONDS = 10.0
MARK_EVERY_SECONDS = 1.0
"""How often tasks published are noted as such, all in one statement: well within RELAY_AGE_SECONDS, so the
relay publishes none of them again, and rarely enough that a busy control plane writes one statement a
second rather than one a dispatch (a mark lost in a crash only has the relay publish the task again, which
JetStream drops as a duplicate of its message id)."""
LEDGER_RELOAD_SECONDS = 30.0
LIMITS_RELOAD_SECONDS = 2.0
"""How soon a limit set through another control plane applies here."""
CONTROL_PLANE = "control-plane"
"""Where the tasks the control plane keeps itself (timers, signal waits) are recorded: never on the bus."""


class Recorded(Protocol):
    """What every record of a task (new, pending, or the orchestrator's working copy) gives its dispatch."""

    @property
    def id(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def input(self) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
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
    traceparent: str | None = None
    """The trace the task continues (set only while tracing is on)."""

    @classmethod
    def of(cls, task: Recorded, tool: Tool, *, tenant: str, run_id: str, attempt: int) -> "Dispatch":
        """Attempt ``attempt`` of the recorded ``task``, run by ``tool``."""
        return cls(
            tenant=tenant,
            run_id=run_id,
            task_id=task.id,
            attempt=attempt,
            step=task.step,
            queue=task.queue,
            tool=tool,
            input=task.input,
        )

    def outgoing(self, traceparent: str | None = None) -> Outgoing:
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
        )
        return Outgoing(
            subjects.tasks(self.tenant, self.queue), encode(task), f"{self.task_id}:{self.attempt}", traceparent
        )


class Dispatcher:
    def __init__(self, pool: Pool, bus: Bus, catalog: Catalog, admission: Admission | None = None) -> None:
        self._pool = pool
        self._bus = bus
        self._catalog = catalog
        self.admission = admission or Admission(0)
        self._ledger_lock = asyncio.Lock()
        self._release_wanted: set[str] = set()
        self._wake_release = asyncio.Event()
        self._published: list[str] = []
        self._has_published = asyncio.Event()
        self._retries = Background("publishing a retry (the relay publishes it again)")
        self._timers: set[asyncio.TimerHandle] = set()

    async def dispatch_new(self, dispatches: Sequence[Dispatch], *, behind_held: bool = True) -> None:
        """New tasks: publish those admitted, hold the rest in PostgreSQL until slots free."""
        by_tenant: dict[str, list[Dispatch]] = {}
        for dispatch in dispatches:
            by_tenant.setdefault(dispatch.tenant, []).append(dispatch)
        admitted: list[Dispatch] = []
        for tenant, group in by_tenant.items():
            await self._know(tenant)
            # Under the ledger's lock, so that a reload cannot miss tasks between admission and their hold.
            async with self._ledger_lock:
                held: list[Dispatch] = []
                if not self.admission.limited(tenant):
                    going, held = self.admission.admit(tenant, group, behind_held=behind_held)
                if self.admission.limited(tenant) or held:
                    # Over the ceiling by this ledger, which other control planes' finished tasks leave behind:
                    # decided again on the record.
                    going, held = await self._admit_locked(tenant, group, behind_held)
            admitted.extend(going)
            if held:
                self._want_release(tenant)
        await self.publish_tasks(admitted)

    async def _admit_locked(
        self, tenant: str, group: Sequence[Dispatch], behind_held: bool
    ) -> tuple[list[Dispatch], list[Dispatch]]:
        async with limits.locked_ledger(self._pool, tenant, CONTROL_PLANE) as ledger:
            self._read(tenant, ledger)
            going, held = self.admission.admit(tenant, group, behind_held=behind_held)
            if held:
                await limits.hold_tasks(ledger.connection, [d.task_id for d in held])
        return going, held

    def _read(self, tenant: str, ledger: limits.Ledger) -> None:
        self.admission.configure_tenant(tenant, ledger.limits)
        self.admission.load(tenant, ledger.open_tasks)

    async def refresh(self, tenant: str) -> None:
        """Read the tenant's limits and ledger again (what another control plane admitted, held or freed)."""
        async with self._ledger_lock, limits.locked_ledger(self._pool, tenant, CONTROL_PLANE) as ledger:
            self._read(tenant, ledger)

    def settle(self, tenant: str, finished_task_ids: Sequence[str]) -> None:
        """Tasks reached a final state: their slots free, and held tasks may follow."""
        if finished_task_ids and self.admission.finished(tenant, finished_task_ids):
            self._want_release(tenant)

    def limits_changed(self, tenant: str) -> None:
        self._want_release(tenant)

    async def release(self, stop: asyncio.Event) -> None:
        """Publish held tasks as slots free; reload the ledger from PostgreSQL now and then."""
        loop = asyncio.get_running_loop()
        reloaded = -LEDGER_RELOAD_SECONDS  # at once: tasks held before a restart wait for no new submission
        limits_read = loop.time()
        while not stop.is_set():
            try:
                if loop.time() - limits_read >= LIMITS_RELOAD_SECONDS:
                    limits_read = loop.time()
                    self.admission.configure(await limits.all_limits(self._pool))
                if loop.time() - reloaded >= LEDGER_RELOAD_SECONDS:
                    reloaded = loop.time()
                    for tenant in {*self.admission.tenants(), *await limits.tenants_with_held(self._pool)}:
                        await self._load_ledger(tenant)
                wanted, self._release_wanted = self._release_wanted | set(self.admission.with_held()), set()
                for tenant in wanted:
                    await self.release_once(tenant)
            except Exception as error:
                log.warning("releasing held tasks failed (tried again shortly): %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_release.wait(), LIMITS_RELOAD_SECONDS)
            self._wake_release.clear()

    async def release_once(self, tenant: str) -> int:
        async with self._ledger_lock, limits.locked_ledger(self._pool, tenant, CONTROL_PLANE) as ledger:
            self._read(tenant, ledger)
            queues, total = self.admission.releasable(tenant)
            pending = await limits.release_held(ledger.connection, tenant, queues, total)
            dispatches = [await self._dispatch_of(task) for task in pending]
            self.admission.released(tenant, dispatches)
        if dispatches:
            log.debug("released %d held task(s) of tenant %s", len(dispatches), tenant)
            await self.publish_tasks(dispatches)
        return len(dispatches)

    def wake(self) -> None:
        """End the waits of ``release`` and ``mark_published`` now: once their ``stop`` is set, they return."""
        self._wake_release.set()
        self._has_published.set()

    def _want_release(self, tenant: str) -> None:
        self._release_wanted.add(tenant)
        self._wake_release.set()

    async def _know(self, tenant: str) -> None:
        if not self.admission.knows(tenant):
            await self._load_ledger(tenant)

    async def _load_ledger(self, tenant: str) -> None:
        async with self._ledger_lock:
            self.admission.load(tenant, await limits.open_tasks(self._pool, tenant, CONTROL_PLANE))

    async def publish_tasks(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish and wait until the stream stored every task, then mark them published (in the background)."""
        if not dispatches:
            return
        if tracing.enabled:
            await self._publish_traced(dispatches)
        else:
            await publish_all(self._bus, [d.outgoing() for d in dispatches])
        self._published.extend(d.task_id for d in dispatches)
        self._has_published.set()

    async def _publish_traced(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish with a producer span per task, whose context the task message carries to its worker."""
        spans = [
            tracing.tracer.start_span(
                f"publish {d.step}",
                context=tracing.parent_context(d.traceparent),
                kind=SpanKind.PRODUCER,
                attributes={"agentflow.run_id": d.run_id, "agentflow.task_id": d.task_id, "agentflow.queue": d.queue},
            )
            for d in dispatches
        ]
        try:
            await publish_all(
                self._bus, [d.outgoing(tracing.traceparent_of(s)) for d, s in zip(dispatches, spans, strict=True)]
            )
        finally:
            for span in spans:
                span.end()

    async def publish_events(self, messages: Iterable[Outgoing]) -> None:
        """Events of committed state: published without waiting; watchers also read them from PostgreSQL."""
        for message in messages:
            await notify(self._bus, message)

    async def cancel_tasks(self, tenant: str, run_id: str, task_ids: Sequence[str]) -> None:
        """Tell the workers running these (committed as cancelled) tasks to stop them."""
        notice = CancelTasks(tenant=tenant, run_id=run_id, task_ids=tuple(task_ids))
        await notify(self._bus, Outgoing(subjects.cancels(tenant), encode(notice), f"cancel:{run_id}:{task_ids[0]}"))

    def publish_later(self, dispatch: Dispatch, delay: float) -> None:
        """Publish after ``delay`` seconds (a retry's backoff). The timer lives in memory only: if this
        process stops first, the relay publishes the task once its ``not_before`` has passed."""
        loop = asyncio.get_running_loop()
        handle = loop.call_later(delay, lambda: self._retries.spawn(self.publish_tasks([dispatch])))
        self._timers.add(handle)
        loop.call_later(delay + 1, self._timers.discard, handle)

    async def mark_published(self, stop: asyncio.Event) -> None:
        """Record published tasks: every MARK_EVERY_SECONDS, all that gathered since the last write."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._has_published.wait(), MARK_EVERY_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), MARK_EVERY_SECONDS)
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

    async def relay(self, stop: asyncio.Event, leads: Callable[[], bool]) -> None:
        """The outbox relay, while this control plane ``leads``: publish queued tasks that were committed but
        never marked published."""
        while not stop.is_set():
            try:
                if leads():
                    await self.relay_once()
            except Exception as error:
                log.warning("outbox relay pass failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RELAY_INTERVAL_SECONDS)

    async def relay_once(self, older_than: float = RELAY_AGE_SECONDS) -> int:
        pending = await runs.unpublished_tasks(self._pool, older_than, 1000)
        dispatches = [await self._dispatch_of(task) for task in pending]
        if dispatches:
            log.info("outbox relay: publishing %d task(s) left unpublished", len(dispatches))
            # Through admission: a control plane may have died between a task's commit and its admission.
            await self.dispatch_new(dispatches, behind_held=False)
        return len(dispatches)

    async def _dispatch_of(self, task: runs.PendingTask) -> Dispatch:
        tool = await self._catalog.tool(task.tenant, task.tool_name, task.tool_version)
        return Dispatch.of(task, tool, tenant=task.tenant, run_id=task.run_id, attempt=task.attempt)
