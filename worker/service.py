"""The worker process: pull, execute, publish the result, acknowledge; heartbeat; drain on SIGTERM."""

import asyncio
import itertools
import logging
import os
import signal
import socket
import time

import msgspec
from opentelemetry.trace import SpanKind

from bus import Bus, Consumer, Delivery, Fleet, Notice, connect, logs, model_turns, subjects, tracing
from bus.consume import bind
from bus.messages import (
    CancelTasks,
    Heartbeat,
    Held,
    Released,
    Result,
    Started,
    Task,
    ToolLog,
    TurnReply,
    TurnRequest,
    decode,
    encode,
)
from bus.publish import Outgoing, notify, publish
from bus.states import announces_start
from bus.streams import ensure_task_consumer, wait_for_streams
from bus.watch import listen
from sandbox import Backend
from worker import metrics
from worker.execute import Executor
from worker.settings import Settings

log = logging.getLogger(__name__)

PULL_WAIT_SECONDS = 1.0
ANNOUNCE_AFTER_SECONDS = 0.05
"""A task still running after this long is announced: one that finishes sooner needs no start notice (its result
says when it started), which spares the control plane a write per short model turn or tool call."""
MAX_HELD_IN_HEARTBEAT = 1000
"""A heartbeat lists at most this many held attempts (about 150 KB), well under NATS's largest message; the
control plane knows the rest from their start notices."""


class Worker:
    def __init__(self, settings: Settings, backend: Backend, metrics_port: int = 0) -> None:
        """``metrics_port``: where this process serves its /metrics (announced in heartbeats; 0: nowhere)."""
        self._settings = settings
        self._backend = backend
        self._executor = Executor(backend, settings.worker_id, self._publish_log, self._ask_model)
        self._stop = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._running: dict[Delivery, float] = {}
        """Tasks being executed, with when they started (time.monotonic)."""
        self._holding: dict[Delivery, Held] = {}
        """Every task attempt taken and not yet settled, as the heartbeat lists it."""
        self._holding_changed = asyncio.Event()
        """Set when ``_holding`` changes: the next heartbeat goes out sooner, so the fleet knows what died with
        this worker if it dies."""
        self._executions: dict[str, asyncio.Task[Result]] = {}
        """The execution of each task being run, by task id: what a cancel notice stops."""
        self._bus: Bus | None = None
        self._started_at = time.time()
        self._metrics_port = metrics_port
        self.completed = 0

    async def _ask_model(self, request: TurnRequest) -> TurnReply:
        if self._bus is None:
            return TurnReply(ok=False, error="the worker is not connected to NATS", retryable=True)
        return await model_turns.ask(self._bus, request, self._settings.model_turn_seconds)

    def stop(self) -> None:
        """Stop pulling and drain (what SIGTERM and SIGINT do)."""
        self._stop.set()

    async def reconfigure(self, settings: Settings) -> None:
        """Take on reloaded settings (``bus.reload``; those that need a restart come as they were): the next
        pull asks for as many tasks as the new concurrency leaves room for, a drain and a model turn started
        from now on wait as long as they say."""
        self._settings = settings
        metrics.track_load(lambda: len(self._in_flight), settings.concurrency, settings.tenant, settings.queue)
        self._holding_changed.set()  # the next heartbeat, which tells the fleet the concurrency, goes out now

    async def run(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        name = f"agentflow-worker-{settings.worker_id}"
        bus = self._bus = await connect(settings.nats_url, name, settings.nats_user, settings.nats_password)
        await wait_for_streams(bus)
        durable = await ensure_task_consumer(bus, settings.tenant, settings.queue, settings.ack_wait_seconds)
        consumer = await bind(bus, subjects.TASKS_STREAM, durable)
        fleet = await Fleet.open(bus)
        await listen(bus, subjects.cancels(settings.tenant), self._on_cancel)
        metrics.track_load(lambda: len(self._in_flight), settings.concurrency, settings.tenant, settings.queue)
        heartbeat = asyncio.create_task(fleet.beat(self._heartbeat, self._holding_changed))
        progress = asyncio.create_task(self._report_progress())
        log.info(
            "worker %s pulling %s with concurrency %d, sandbox %s; metrics on http://127.0.0.1:%d/metrics",
            settings.worker_id,
            subjects.tasks(settings.tenant, settings.queue),
            settings.concurrency,
            self._backend.kind,
            self._metrics_port,
        )
        try:
            await self._pull_loop(bus, consumer)
            await self._drain()
        finally:
            heartbeat.cancel()
            progress.cancel()
            await asyncio.gather(heartbeat, progress, return_exceptions=True)
            try:
                await fleet.leave(settings.tenant, settings.worker_id)
            except Exception as error:
                log.debug("could not remove the heartbeat entry: %s", error)
            # Everything is acknowledged by now (closing does not drain: that would wait out the pull request).
            await bus.close()
            await self._backend.close()
            log.info("worker %s stopped after %d task(s)", settings.worker_id, self.completed)

    async def _pull_loop(self, bus: Bus, consumer: Consumer) -> None:
        while not self._stop.is_set():
            free = self._settings.concurrency - len(self._in_flight)
            if free <= 0:
                # SIGTERM must interrupt this wait too, or the drain deadline would not apply.
                stopping = asyncio.ensure_future(self._stop.wait())
                await asyncio.wait({*self._in_flight, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                continue
            for msg in await consumer.pull(free, PULL_WAIT_SECONDS, stop=self._stop):
                task = asyncio.create_task(self._handle(bus, msg))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)

    async def _handle(self, bus: Bus, msg: Delivery) -> None:
        traceparent = msg.traceparent
        try:
            task = decode(msg.data, Task)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("terminating a malformed task message on %s: %s", msg.subject, error)
            await msg.term()
            return
        if task.tenant != self._settings.tenant:
            log.warning(
                "terminating task %s of tenant %r on a worker of %r",
                task.task_id,
                task.tenant,
                self._settings.tenant,
            )
            await msg.term()
            return
        # This coroutine is an asyncio task of its own: the scope is this task's alone.
        logs.scope.set(logs.Scope(task.tenant, task.run_id, task.task_id, traceparent))
        if tracing.enabled:
            with tracing.tracer.start_as_current_span(
                f"consume {task.step}",
                context=tracing.parent_context(traceparent),
                kind=SpanKind.CONSUMER,
                attributes={"agentflow.run_id": task.run_id, "agentflow.task_id": task.task_id},
            ):
                await self._complete(bus, msg, task, tracing.current_traceparent())
        else:
            await self._complete(bus, msg, task, traceparent)

    async def _complete(self, bus: Bus, msg: Delivery, task: Task, traceparent: str | None) -> None:
        self._holding[msg] = Held(run_id=task.run_id, task_id=task.task_id, attempt=task.attempt, seq=msg.stream_seq)
        self._holding_changed.set()
        announced = announces_start(task.runtime.builtin)
        try:
            announcing = asyncio.create_task(self._announce_later(task, msg.stream_seq)) if announced else None
            self._running[msg] = time.monotonic()
            try:
                result = await self._execute(task, traceparent, first=msg.deliveries == 1 and task.attempt == 1)
            finally:
                del self._running[msg]
                if announcing is not None:
                    # Awaited before the result is published, so a notice that did go out precedes it.
                    announcing.cancel()
                    await asyncio.gather(announcing, return_exceptions=True)
            deliveries, queued_at = msg.deliveries, msg.stored_at
            # Clocks of different hosts: a nats-server ahead of the worker would make the wait negative.
            waited = None if queued_at is None else max(0.0, result.started_at - queued_at)
            result = msgspec.structs.replace(result, deliveries=deliveries, queued_at=queued_at, queue_seconds=waited)
            # The result must be stored before the task is acknowledged: if we die in between, the task
            # is redelivered and the duplicate result is ignored by (task_id, attempt).
            await publish(
                bus,
                Outgoing(
                    subjects.results(task.tenant, task.run_id),
                    encode(result),
                    f"{task.task_id}:{task.attempt}:result",
                    traceparent,
                ),
            )
            await msg.ack()
            self.completed += 1
            self._count(task, result, deliveries, waited)
        except asyncio.CancelledError:
            await msg.nak()
            if announced:
                await self._notify(
                    task,
                    Released(
                        tenant=task.tenant,
                        run_id=task.run_id,
                        task_id=task.task_id,
                        attempt=task.attempt,
                        worker_id=self._settings.worker_id,
                    ),
                )
            raise
        except Exception:
            # Not acknowledged: JetStream redelivers it after the ack wait.
            log.exception(
                "task %s attempt %d could not be completed; leaving it for redelivery",
                task.task_id,
                task.attempt,
            )
        finally:
            del self._holding[msg]
            self._holding_changed.set()

    def _count(self, task: Task, result: Result, deliveries: int, waited: float | None) -> None:
        key = (task.tenant, self._settings.queue)
        metrics.TASKS.add((*key, task.tool, "ok" if result.ok else result.error_kind or "error"))
        metrics.EXECUTION.observe(key, result.finished_at - result.started_at)
        if waited is not None:
            metrics.QUEUE_WAIT.observe(key, waited)
        if deliveries > 1:
            metrics.REDELIVERIES.add(key)

    async def _execute(self, task: Task, traceparent: str | None, *, first: bool) -> Result:
        """Run the task; a cancel notice for it stops the execution (and its sandbox) with a cancelled result."""
        started = time.time()
        execution = asyncio.create_task(self._executor.execute(task, traceparent, first=first))
        self._executions[task.task_id] = execution
        try:
            return await execution
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the worker itself is stopping: the task is handed back
            return self._executor.cancelled(task, started)
        finally:
            del self._executions[task.task_id]

    async def _on_cancel(self, msg: Notice) -> None:
        try:
            notice = decode(msg.data, CancelTasks)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("ignoring a malformed cancel notice on %s: %s", msg.subject, error)
            return
        for task_id in notice.task_ids:
            execution = self._executions.get(task_id)
            if execution is not None:
                log.info("stopping task %s of run %s: cancelled", task_id, notice.run_id)
                execution.cancel()

    async def _announce_later(self, task: Task, seq: int) -> None:
        """Say the attempt started, once it has run ANNOUNCE_AFTER_SECONDS (the control plane marks the task
        running, and records which worker holds the message at ``seq``). Not awaited by the stream: the result
        that follows travels the same connection, so it cannot overtake this notice."""
        started_at = time.time()
        await asyncio.sleep(ANNOUNCE_AFTER_SECONDS)
        started = Started(
            tenant=task.tenant,
            run_id=task.run_id,
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self._settings.worker_id,
            sandbox=self._backend.kind if task.runtime.builtin is None else "builtin",
            started_at=started_at,
            seq=seq,
        )
        await self._notify(task, started)

    async def _publish_log(self, piece: ToolLog) -> None:
        """Publish a piece of a running tool's stderr for those following its run (core NATS, no stream)."""
        assert self._bus is not None
        msg_id = f"{piece.task_id}:{piece.attempt}:log:{piece.seq}"
        await notify(self._bus, Outgoing(subjects.tool_logs(piece.tenant, piece.run_id), encode(piece), msg_id))

    async def _notify(self, task: Task, notice: Started | Released) -> None:
        """Publish a notice about ``task`` on its results subject, without waiting for the stream."""
        assert self._bus is not None
        msg_id = f"{task.task_id}:{task.attempt}:{type(notice).__name__.lower()}:{time.time_ns()}"
        await notify(self._bus, Outgoing(subjects.results(task.tenant, task.run_id), encode(notice), msg_id))

    async def _report_progress(self) -> None:
        """Tell JetStream which tasks are still being worked on, so a task is redelivered only if this worker
        dies; one loop for all tasks, touching only those running longer than a report interval."""
        interval = self._settings.ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for msg, started in list(self._running.items()):
                if now - started >= interval:
                    try:
                        await msg.in_progress()
                    except Exception as error:
                        log.debug("progress report failed: %s", error)

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        log.info("draining %d task(s) in flight (up to %.0f s)", len(self._in_flight), self._settings.drain_seconds)
        _, late = await asyncio.wait(self._in_flight, timeout=self._settings.drain_seconds)
        if late:
            log.warning("handing back %d task(s) that did not finish in time", len(late))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    def _heartbeat(self) -> Heartbeat:
        """This worker as the fleet sees it now."""
        settings = self._settings
        return Heartbeat(
            worker_id=settings.worker_id,
            tenant=settings.tenant,
            queues=(settings.queue,),
            concurrency=settings.concurrency,
            in_flight=len(self._in_flight),
            sandbox=self._backend.kind,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=self._started_at,
            at=time.time(),
            metrics_port=self._metrics_port,
            holding=tuple(itertools.islice(self._holding.values(), MAX_HELD_IN_HEARTBEAT)),
        )
