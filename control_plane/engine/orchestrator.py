"""The durable orchestrator: folds task results into run state and plans what comes next.

Results are pulled in batches. For each batch: take the runs involved from the run cache or load them
with all their tasks (as working copies, ``engine.working``), plan every run in memory, write all changes
in one statement (guarded by each run's version), and only after that commit (``_committed``, the same
for a cancel) free admission slots, publish the new tasks and then the events, and acknowledge the
results. A result whose attempt is not the task's current one, or whose task already finished, changes
nothing: results apply once per (task_id, attempt) however often they are delivered.
"""

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus import Bus, Delivery, subjects, tracing
from bus.consume import bind
from bus.messages import Released, Result, Started, decode_report, json_text
from bus.states import FINAL_RUN_STATES, FINAL_TASK_STATES, MODEL_TOOL, RunState, TaskState, announces_start
from control_plane import metrics
from control_plane.catalog.documents import RetrySpec, check_name_field
from control_plane.catalog.resolver import (
    Catalog,
    Tool,
    Workflow,
    schema_problem,
    schema_validator,
)
from control_plane.engine.dispatch import CONTROL_PLANE, Dispatch, Dispatcher
from control_plane.engine.events import EventLog, outgoing
from control_plane.engine.run_cache import RunCache
from control_plane.engine.step_instances import due_result, plan_instance, signal_result, waiting_for
from control_plane.engine.working import PlanView, WorkingRun, WorkingTask
from control_plane.errors import Conflict, Invalid, NotFound, Unavailable
from control_plane.planning import Settle, ToolCall, decide
from control_plane.planning.agent import turn_summary
from registry import runs
from registry.db import Pool
from registry.runs import RunRow

log = logging.getLogger(__name__)

BATCH = 512
RETRY_APPLY_SECONDS = 1.0
SCHEDULE_CHECK_SECONDS = 1.0
MAX_REPLANS = 8
MAX_ATTEMPTS_AFTER_LOSS = 20
"""A task whose workers keep dying (a tool that brings its worker down) is dead after this many attempts."""


@dataclass(slots=True, kw_only=True)
class Change:
    """Everything one run's planning step writes and publishes."""

    tenant: str
    run: runs.RunUpdate
    task_updates: dict[str, runs.TaskUpdate] = field(default_factory=dict)
    """At most one update per task: one statement cannot update a row twice, so a start notice and the
    result that follows it in the same batch are merged into one."""
    new_tasks: list[runs.NewTask] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)
    retries: list[tuple[float, Dispatch]] = field(default_factory=list)
    """Next attempts of failed tasks, each to publish after its backoff (seconds)."""
    events: list[runs.NewEvent] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    """Tasks on the bus this change cancels: their workers are told to stop them once it is committed."""
    ended: list[tuple[str, str, str, float | None]] = field(default_factory=list)
    """(queue, tool, state, round trip seconds or None) of each attempt this change ends, for the metrics."""

    @classmethod
    def of(cls, run: WorkingRun) -> "Change":
        """A change of ``run`` that changes nothing yet, guarded by the version the run is at."""
        update = runs.RunUpdate(id=run.id, expected_seq=run.last_seq, last_seq=run.last_seq, state=run.state)
        return cls(tenant=run.tenant, run=update)

    def update_task(self, update: runs.TaskUpdate) -> None:
        earlier = self.task_updates.get(update.id)
        if earlier is not None:
            # Guarded by the attempt the task had before this change; started as the first report said.
            update = msgspec.structs.replace(
                update,
                attempt=earlier.attempt,
                started_at=update.started_at or earlier.started_at,
                worker_id=update.worker_id or earlier.worker_id,
            )
        self.task_updates[update.id] = update


class Orchestrator:
    def __init__(self, pool: Pool, bus: Bus, catalog: Catalog, dispatcher: Dispatcher, cache: RunCache) -> None:
        self._pool = pool
        self._bus = bus
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._cache = cache

    async def run(self, stop: asyncio.Event) -> None:
        consumer = await bind(self._bus, subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER)
        while not stop.is_set():
            msgs = await consumer.pull(BATCH, 1.0, stop=stop)
            if not msgs:
                continue
            try:
                await self.handle(msgs)
            except Exception:
                # Handed back with a short delay (PostgreSQL may be restarting): nothing is lost.
                log.exception("applying %d result(s) failed; they will be redelivered", len(msgs))
                for msg in msgs:
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=RETRY_APPLY_SECONDS)
                await asyncio.sleep(RETRY_APPLY_SECONDS)

    async def watch_due(self, stop: asyncio.Event, leads: Callable[[], bool]) -> None:
        """While this control plane ``leads``: fire timers that have run out and time out signal waits, and
        fail queued attempts that no worker started in time (their retry policy applies)."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SCHEDULE_CHECK_SECONDS)
            if not leads():
                continue
            try:
                late = await runs.late_tasks(self._pool, 500)
                if late:
                    await self.apply([due_result(task) for task in late])
            except Exception as error:
                log.warning("checking due timers and deadlines failed: %s", error)

    async def handle(self, msgs: list[Delivery]) -> None:
        results: list[Result | Started | Released] = []
        decoded: list[Delivery] = []
        for msg in msgs:
            try:
                results.append(decode_report(msg.data))
                decoded.append(msg)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                log.warning("terminating a malformed result on %s: %s", msg.subject, error)
                await msg.term()
        if results:
            if tracing.enabled:
                await self._apply_traced(results, decoded)
            else:
                await self.apply(results)
        for msg in decoded:
            await msg.ack()

    async def _apply_traced(self, results: list[Result | Started | Released], msgs: list[Delivery]) -> None:
        """``apply`` with a span per result, continuing the trace of its task; the tasks a run's results lead
        to continue the trace of the run's first result."""
        spans = []
        traceparents: dict[str, str] = {}
        for result, msg in zip(results, msgs, strict=True):
            if isinstance(result, Result):
                parent = tracing.parent_context(msg.traceparent)
                span = tracing.tracer.start_span(
                    "apply result", context=parent, attributes={"agentflow.task_id": result.task_id}
                )
                spans.append(span)
                traceparents.setdefault(result.run_id, tracing.traceparent_of(span))
        try:
            await self.apply(results, traceparents)
        finally:
            for span in spans:
                span.end()

    async def apply(
        self, results: list[Result | Started | Released], traceparents: dict[str, str] | None = None
    ) -> None:
        """Apply a batch of results: once per (task, attempt), replanning runs changed meanwhile;
        ``traceparents`` are the trace contexts by run id that the tasks planned now carry."""
        by_run: dict[str, list[Result | Started | Released]] = {}
        for result in results:
            by_run.setdefault(result.run_id, []).append(result)
        for _ in range(MAX_REPLANS):
            states = self._cache.take(by_run)
            cached = set(states)
            missing = [run_id for run_id in by_run if run_id not in states]
            if missing:
                states.update(await self._load(missing))
            changes = []
            unconfirmed: list[str] = []
            for run_id, run_results in by_run.items():
                state = states.get(run_id)
                if state is None or state.tenant != run_results[0].tenant:
                    log.warning("ignoring %d result(s) of unknown run %s", len(run_results), run_id)
                    continue
                began = time.perf_counter()
                change = await self._plan(state, run_results)
                metrics.PLAN_STEP.observe((state.target_kind,), time.perf_counter() - began)
                if change is None and run_id in cached:
                    # Nothing to do by the cached copy, which no write guards: another control plane may have
                    # made the task these results are for. Only the record can say they change nothing.
                    unconfirmed.append(run_id)
                elif change is None:
                    self._cache.put(state)
                else:
                    if traceparents and (traceparent := traceparents.get(run_id)):
                        _carry(change, traceparent)
                    changes.append(change)
            applied = await self._write(changes, states)
            # The rest were changed by someone else since they were read (or cached), or were judged on a cached copy:
            # read and plan again.
            again = [*(c.run.id for c in changes if c.run.id not in applied), *unconfirmed]
            by_run = {run_id: by_run[run_id] for run_id in again}
            if not by_run:
                return
        raise RuntimeError(f"runs {sorted(by_run)} kept changing while results were applied")

    async def _write(self, changes: list[Change], states: dict[str, WorkingRun]) -> set[str]:
        """Write the changes in one statement and follow up those committed; the ids of the runs applied."""
        if not changes:
            return set()
        applied = await runs.apply_changes(
            self._pool,
            [c.run for c in changes],
            [u for c in changes for u in c.task_updates.values()],
            [t for c in changes for t in c.new_tasks],
            [e for c in changes for e in c.events],
        )
        done = [c for c in changes if c.run.id in applied]
        updates = [u for c in done for u in c.task_updates.values()]
        metrics.APPLY_BATCH.observe(len(updates))
        for state_name, count in Counter(u.state for u in updates).items():
            metrics.RESULTS_APPLIED.labels(state_name).inc(count)
        await self._committed(done, states)
        return applied

    async def cancel(self, tenant: str, run_id: str) -> RunRow:
        """Cancel a run that has not finished; returns the run as cancelled. Raises NotFound, or Conflict if
        it has finished."""
        for _ in range(MAX_REPLANS):
            run = await self._read(tenant, run_id)
            if run.state in FINAL_RUN_STATES:
                raise Conflict("run-finished", f"run {run_id} already {run.state}", "id")
            events = EventLog(run.tenant, run.id, run.last_seq)
            change = Change.of(run)
            cancel_open_tasks(run, change, events)
            events.add("run.cancelled", {})
            change.run = msgspec.structs.replace(change.run, last_seq=events.last_seq, state=RunState.CANCELLED)
            change.events = events.events
            self._cache.drop(run_id)
            row = await runs.apply_change(self._pool, change.run, list(change.task_updates.values()), change.events)
            if row is not None:
                await self._committed([change], {run_id: run})
                return row
        raise Unavailable("unavailable", f"run {run_id} kept changing; retry the cancel")

    async def signal(self, tenant: str, run_id: str, name: str, data: Any) -> str:
        """Deliver signal ``name`` to the step instance of the run waiting for it; returns that instance's key.

        A signal nothing waits for is refused rather than kept: the sender learns at once that it was not
        taken, and can send it again when the run is waiting. Of several waits for one name, the signal goes
        to the first whose ``match`` its data holds (an agent's approval names its call), and its data must
        match that wait's ``schema``.
        """
        run = await self._read(tenant, run_id)
        check_name_field("signal", name, "name")
        if run.state in FINAL_RUN_STATES:
            raise Conflict("run-finished", f"run {run_id} already {run.state}", "id")
        known: frozenset[str] = frozenset()
        if run.target_kind != "tool":
            known = (await self._workflow(run)).plan.signals
        if name not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise Invalid("unknown-signal", f"run {run_id} takes no signal {name!r} (its signals: {listed})", "name")
        waits = [(task, wait) for task in run.tasks if (wait := waiting_for(task, name)) is not None]
        if not waits:
            raise Conflict("not-waiting", f"run {run_id} is not waiting for signal {name!r} now", "name")
        waiting, wait = next(((task, wait) for task, wait in waits if wait.takes(data)), (None, None))
        if waiting is None or wait is None:
            wanted = " or ".join(json_text(wait.match) for _, wait in waits)
            raise Conflict("not-waiting", f"run {run_id} waits for signal {name!r} with data holding {wanted}", "data")
        if wait.schema is not None:
            validator = schema_validator(wait.schema, "data")
            if validator is not None and (problem := schema_problem(validator, data, "data")):
                raise Invalid("validation-error", f"signal {name}: {problem}", "data")
        # Applied to the run as just read, not read again: its write is guarded by this version like any.
        self._cache.put(run)
        await self.apply([signal_result(tenant, run_id, waiting, name, data)])
        return waiting.step

    async def _read(self, tenant: str, run_id: str) -> WorkingRun:
        """The run ``run_id`` of ``tenant`` from PostgreSQL; raises NotFound if there is none."""
        run = (await self._load([run_id])).get(run_id) if subjects.ID_RE.fullmatch(run_id) else None
        if run is None or run.tenant != tenant:
            raise NotFound("not-found", f"no run {run_id}", "id")
        return run

    async def _load(self, run_ids: list[str]) -> dict[str, WorkingRun]:
        stored = await runs.load_runs(self._pool, run_ids)
        return {run_id: WorkingRun.of(run) for run_id, run in stored.items()}

    async def _workflow(self, run: WorkingRun) -> Workflow:
        """The plan of a workflow's run, or of an agent's (its loop)."""
        if run.target_kind == "agent":
            return await self._catalog.agent_workflow(run.tenant, run.target_name, run.target_version)
        return await self._catalog.workflow(run.tenant, run.target_name, run.target_version)

    async def _committed(self, changes: list[Change], planned_from: dict[str, WorkingRun]) -> None:
        """What follows the commit of ``changes`` (planned from the runs by id in ``planned_from``): the
        metrics, the cache, the admission slots of finished tasks, then the bus: new tasks, retries after
        their backoff, events, and the stop of cancelled tasks' sandboxes."""
        _count(changes, planned_from)
        for change in changes:
            self._cache.put(_after(planned_from[change.run.id], change))
            finished = [u.id for u in change.task_updates.values() if u.state in FINAL_TASK_STATES]
            self._dispatcher.settle(change.tenant, finished)
        await self._dispatcher.dispatch_new([d for c in changes for d in c.dispatches])
        for delay, dispatch in (r for c in changes for r in c.retries):
            self._dispatcher.publish_later(dispatch, delay)
        await self._dispatcher.publish_events([outgoing(c.tenant, c.run.id, c.events) for c in changes if c.events])
        for change in changes:
            if change.cancelled:
                await self._dispatcher.cancel_tasks(change.tenant, change.run.id, change.cancelled)

    async def _plan(self, run: WorkingRun, results: list[Result | Started | Released]) -> Change | None:
        tasks = {task.id: task for task in run.tasks}
        events = EventLog(run.tenant, run.id, run.last_seq)
        change = Change.of(run)
        workflow: Workflow | None = None
        for result in results:
            task = tasks.get(result.task_id)
            if task is None or task.attempt != result.attempt or task.state in FINAL_TASK_STATES:
                metrics.RESULTS_DUPLICATE.inc()
                continue
            if run.state in FINAL_RUN_STATES:
                continue
            if isinstance(result, Started | Released):
                _mark_progress(run, task, result, change, events)
                continue
            if workflow is None and run.target_kind != "tool":
                workflow = await self._workflow(run)
            tool = await self._catalog.tool(run.tenant, task.tool_name, task.tool_version)
            policy = (workflow.retries.get(task.element) if workflow else None) or tool.retry
            _fold_result(run, task, result, tool, policy, change, events)
        if not change.task_updates:
            return None
        finished: tuple[RunState, str | None, str | None] | None = None
        if run.target_kind == "tool":
            only = run.tasks[0]
            if only.state in FINAL_TASK_STATES:
                state = RunState.SUCCEEDED if only.state == TaskState.SUCCEEDED else RunState.FAILED
                finished = (state, only.output, only.error)
        else:
            finished = self._plan_workflow(run, workflow or await self._workflow(run), change, events)
        if finished is not None:
            self._finish(run, change, events, *finished)
        change.events = events.events
        change.run = msgspec.structs.replace(change.run, last_seq=events.last_seq)
        return change

    @staticmethod
    def _plan_workflow(
        run: WorkingRun, workflow: Workflow, change: Change, events: EventLog
    ) -> tuple[RunState, str | None, str | None] | None:
        view = run.view = run.view or PlanView(run.input)
        view.show(run.tasks, change.task_updates)
        decision = decide(workflow.plan, view.run_input, view.records)
        now = time.time()
        for settle in decision.settle:
            _settle(run, settle, now, change, events)
        if decision.settle:
            view.show(run.tasks, change.task_updates)
        for start in decision.start:
            tool = workflow.tool(start.action) if isinstance(start.action, ToolCall) else None
            if problem := _input_problem(tool, start.action, start.key):
                return RunState.FAILED, None, f"step {start.key!r} cannot start: {problem}"
            planned = plan_instance(run.tenant, run.id, start, tool, now)
            change.new_tasks.append(planned.task)
            if planned.dispatch is not None:
                change.dispatches.append(planned.dispatch)
            events.add(planned.event, planned.data)
        if decision.outcome is None:
            return None
        output = None if decision.outcome.output is None else json_text(decision.outcome.output)
        return decision.outcome.state, output, decision.outcome.error

    @staticmethod
    def _finish(
        run: WorkingRun,
        change: Change,
        events: EventLog,
        state: RunState,
        output: str | None,
        error: str | None,
    ) -> None:
        # What is still open is no longer needed (a failed run, or a settled parallel or timeout node).
        cancel_open_tasks(run, change, events)
        # Tasks planned in this same step never reach the bus.
        change.new_tasks.clear()
        change.dispatches.clear()
        change.run = msgspec.structs.replace(change.run, state=state, output=output, error=error)
        events.add(f"run.{state}", {"output": msgspec.Raw(output.encode())} if output else {"error": error})


def _carry(change: Change, traceparent: str) -> None:
    """Make the tasks ``change`` publishes continue the trace ``traceparent``."""
    change.dispatches = [dataclasses.replace(d, traceparent=traceparent) for d in change.dispatches]
    change.retries = [(delay, dataclasses.replace(d, traceparent=traceparent)) for delay, d in change.retries]


def _count(changes: list[Change], states: dict[str, WorkingRun]) -> None:
    """Count the runs and task attempts committed changes ended: once per batch, per label set."""
    ended: Counter[tuple[str, ...]] = Counter()
    finished: Counter[tuple[str, ...]] = Counter()
    for change in changes:
        for queue, tool, state, round_trip in change.ended:
            ended[(change.tenant, queue, tool, state)] += 1
            if round_trip is not None:
                metrics.ROUND_TRIP.observe((change.tenant, queue), round_trip)
        if change.run.state in FINAL_RUN_STATES:
            finished[(change.tenant, states[change.run.id].target_kind, change.run.state)] += 1
    metrics.TASKS.add_all(ended)
    metrics.RUNS.add_all(finished)


def _after(run: WorkingRun, change: Change) -> WorkingRun:
    """The run as ``change`` left it (its tasks were already updated in place while planning)."""
    run.state = change.run.state
    run.last_seq = change.run.last_seq
    run.tasks.extend(WorkingTask.new(t) for t in change.new_tasks)
    return run


def _fold_result(
    run: WorkingRun,
    task: WorkingTask,
    result: Result,
    tool: Tool,
    policy: RetrySpec,
    change: Change,
    events: EventLog,
) -> None:
    """The result of the task's current attempt: the task succeeded, failed (for good, or with another
    attempt to come after its backoff under ``policy``) or is dead (attempts exhausted)."""
    state, output, error = _outcome(result, tool)
    data: dict[str, Any] = {"task_id": task.id, "step": task.step, "attempt": task.attempt}
    if task.state == TaskState.QUEUED and announces_start(tool.runtime.builtin):
        # Workers announce only attempts that outlive their announce delay; a quicker one's result tells its start.
        events.add("task.started", {**data, "worker_id": result.worker_id})
    data["duration_ms"] = round((result.finished_at - result.started_at) * 1000, 3)
    next_attempt = not_before = None
    if result.error_kind == "lost":
        # The tool did not fail, its worker died: tried again at once, whatever the retry policy says.
        if task.attempt < MAX_ATTEMPTS_AFTER_LOSS:
            next_attempt, not_before, state = task.attempt + 1, time.time(), TaskState.QUEUED
            data.update(next_attempt=next_attempt, retry_in_s=0)
            retry = Dispatch.of(task, tool, tenant=run.tenant, run_id=run.id, attempt=next_attempt)
            change.retries.append((0.0, retry))
        else:
            state, error = TaskState.DEAD, f"{error} (gave up after {task.attempt} attempts)"
    elif state == TaskState.FAILED and result.error_kind in policy.retry_on:
        if task.attempt < policy.max_attempts:
            delay = policy.delay(task.attempt, random.random())
            next_attempt, not_before, state = task.attempt + 1, time.time() + delay, TaskState.QUEUED
            data.update(next_attempt=next_attempt, retry_in_s=round(delay, 3))
            retry = Dispatch.of(task, tool, tenant=run.tenant, run_id=run.id, attempt=next_attempt)
            change.retries.append((delay, retry))
        elif policy.max_attempts > 1:
            state, error = TaskState.DEAD, f"{error} (gave up after {task.attempt} attempts)"
    change.update_task(
        runs.TaskUpdate(
            id=task.id,
            run_id=run.id,
            attempt=task.attempt,
            state=state,
            output=output,
            error=error,
            detail=json_text(_detail(result)),
            worker_id=result.worker_id,
            started_at=result.started_at,
            finished_at=result.finished_at,
            next_attempt=next_attempt,
            not_before=not_before,
            start_by=tool.start_by(not_before) if not_before is not None else None,
            usage=_sandbox_usage(result),
        )
    )
    if error is not None:
        data["error"] = error
    if output is not None and tool.name == MODEL_TOOL:
        data["turn"] = turn_summary(msgspec.json.decode(output))
    if result.stderr_tail:
        data["stderr"] = result.stderr_tail
    events.add("task.retrying" if next_attempt else f"task.{state}", data)
    task.worker_id, task.started_at = result.worker_id, result.started_at
    round_trip = time.time() - result.queued_at if result.queued_at else None
    change.ended.append((task.queue, task.tool_name, "retrying" if next_attempt else state, round_trip))
    task.state, task.output, task.error = state, output, error
    task.attempt = next_attempt or task.attempt


def _mark_progress(
    run: WorkingRun, task: WorkingTask, notice: Started | Released, change: Change, events: EventLog
) -> None:
    """A worker started the task (queued -> running) or handed it back (running -> queued)."""
    started = isinstance(notice, Started)
    if task.state != (TaskState.QUEUED if started else TaskState.RUNNING):
        return
    task.state = TaskState.RUNNING if started else TaskState.QUEUED
    task.worker_id = notice.worker_id
    task.started_at = notice.started_at if isinstance(notice, Started) else None
    # Which message the worker holds, should it die running it (see engine.fleet_view).
    seq = (notice.seq or None) if isinstance(notice, Started) else None
    change.update_task(msgspec.structs.replace(_as_known(run, task), message_seq=seq))
    data = {"task_id": task.id, "step": task.step, "attempt": task.attempt, "worker_id": notice.worker_id}
    events.add("task.started" if started else "task.released", data)


def _as_known(run: WorkingRun, task: WorkingTask, finished_at: float | None = None) -> runs.TaskUpdate:
    """An update of the task's current attempt to its state in the working copy, naming what that copy knows
    of the attempt (its worker and start), since an update clears what it leaves out."""
    return runs.TaskUpdate(
        id=task.id,
        run_id=run.id,
        attempt=task.attempt,
        state=task.state,
        worker_id=task.worker_id,
        started_at=task.started_at,
        finished_at=finished_at,
    )


def _settle(run: WorkingRun, settle: Settle, now: float, change: Change, events: EventLog) -> None:
    """An instance the control plane keeps (an agent step) ends with its loop's answer or error."""
    task = next(task for task in run.tasks if task.step == settle.key)
    output = json_text(settle.output) if settle.state == TaskState.SUCCEEDED else None
    change.update_task(
        runs.TaskUpdate(
            id=task.id,
            run_id=run.id,
            attempt=task.attempt,
            state=settle.state,
            output=output,
            error=settle.error,
            finished_at=now,
        )
    )
    task.state, task.output, task.error = settle.state, output, settle.error
    data: dict[str, Any] = {"task_id": task.id, "step": task.step, "attempt": task.attempt}
    if settle.error is not None:
        data["error"] = settle.error
    events.add(f"task.{settle.state}", data)
    change.ended.append((task.queue, task.tool_name, settle.state, None))


def cancel_open_tasks(run: WorkingRun, change: Change, events: EventLog) -> None:
    """Mark every task of the run that has not finished as cancelled."""
    now = time.time()
    for task in run.tasks:
        if task.state not in FINAL_TASK_STATES:
            task.state = TaskState.CANCELLED
            if task.queue != CONTROL_PLANE:
                change.cancelled.append(task.id)
            change.update_task(_as_known(run, task, finished_at=now))
            change.ended.append((task.queue, task.tool_name, TaskState.CANCELLED, None))
            events.add("task.cancelled", {"task_id": task.id, "step": task.step, "attempt": task.attempt})


def _input_problem(tool: Tool | None, action: object, key: str) -> str | None:
    if tool is None or tool.input_validator is None or not isinstance(action, ToolCall):
        return None
    return schema_problem(tool.input_validator, action.input, f"steps.{key}.input")


def _outcome(result: Result, tool: Tool) -> tuple[TaskState, str | None, str | None]:
    """(state, output JSON, error) of a task from its result, checking the output against the tool's schema."""
    if not result.ok:
        return TaskState.FAILED, None, result.error or "the tool failed without a reason"
    output_json = bytes(result.output).decode()
    if tool.output_validator is not None:
        problem = schema_problem(tool.output_validator, msgspec.json.decode(output_json), "output")
        if problem:
            return TaskState.FAILED, None, f"the tool's output does not match its output_schema: {problem}"
    return TaskState.SUCCEEDED, output_json, None


class Usage(msgspec.Struct, frozen=True):
    """Model usage a tool reports in its output, as ``{"model": ..., "usage": {"input_tokens": ..., ...}}``."""

    input_tokens: int = 0
    output_tokens: int = 0


class _UsageReport(msgspec.Struct, frozen=True):
    usage: Usage
    model: str | None = None


_decode_usage = msgspec.json.Decoder(_UsageReport).decode


def _usage(result: Result) -> dict[str, Any] | None:
    # Most outputs carry no usage: a substring test keeps them from being decoded at all.
    if not result.ok or b'"usage"' not in bytes(result.output):
        return None
    try:
        report = _decode_usage(bytes(result.output))
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return {
        "model": report.model,
        "input_tokens": report.usage.input_tokens,
        "output_tokens": report.usage.output_tokens,
    }


def _sandbox_usage(result: Result) -> runs.SandboxUsage:
    return runs.SandboxUsage(
        sandbox=result.sandbox,
        cpu_seconds=result.cpu_seconds,
        max_rss_kb=result.max_rss_kb,
        queue_seconds=result.queue_seconds,
        start_seconds=result.start_seconds,
        run_seconds=result.run_seconds,
    )


def _detail(result: Result) -> dict[str, Any]:
    detail: dict[str, Any] = {"sandbox": result.sandbox}
    detail["deliveries"] = result.deliveries
    if (usage := _usage(result)) is not None:
        detail["usage"] = usage
    for name in ("error_kind", "exit_code", "stderr_tail"):
        value = getattr(result, name)
        if value is not None:
            detail[name] = value
    return detail
