"""Submissions: run requests are validated, planned, then written in batches (group commit).

Concurrent requests queue up while the previous batch is being written, so under load one statement
and one commit carry hundreds of runs, and the first tasks of all of them are published pipelined.
"""

import asyncio
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from bus import tracing
from bus.messages import encode, json_text
from bus.states import RunState
from control_plane import metrics
from control_plane.catalog.documents import RunRequest, check_name_field, split_ref
from control_plane.catalog.resolver import Catalog, Tool, Workflow, schema_problem
from control_plane.engine.background import Background
from control_plane.engine.dispatch import Dispatch, Dispatcher
from control_plane.engine.events import EventLog, outgoing
from control_plane.engine.ids import new_id
from control_plane.engine.run_cache import RunCache
from control_plane.engine.step_instances import Planned, plan_instance
from control_plane.engine.working import WorkingRun
from control_plane.errors import Conflict, Invalid, Refused, Unavailable
from control_plane.planning import RunOutcome, Start, ToolCall, decide
from registry import runs
from registry.db import Pool

log = logging.getLogger(__name__)

MAX_BATCH = 1000


@dataclass(slots=True, kw_only=True)
class Submission:
    """A validated request with its first tasks planned, waiting for its batch to be written."""

    tenant: str
    run_id: str
    target_kind: str
    target_name: str
    target_version: str
    input: str
    idempotency_key: str | None
    request_digest: str
    tasks: list[Planned]
    outcome: RunOutcome | None
    """Set when the run is finished as soon as it starts (every step of it skipped, say)."""
    actor: str | None = None
    """Who asks for the run, and from where: audited in the statement that records it."""
    source: str | None = None
    traceparent: str | None = None
    """The planning step's trace context, which the first tasks carry (set only while tracing is on)."""
    future: "asyncio.Future[Accepted]" = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def queues(self) -> list[str]:
        """The worker queues its first tasks go to."""
        return sorted({planned.task.queue for planned in self.tasks if planned.dispatch is not None})


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    run_id: str
    created: bool
    state: RunState
    """The run's state when the answer was made: a repeat of a finished run answers how it ended."""


class Submitter:
    def __init__(self, pool: Pool, catalog: Catalog, dispatcher: Dispatcher, cache: RunCache) -> None:
        self._pool = pool
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._cache = cache
        self._pending: list[Submission] = []
        self._wake = asyncio.Event()
        self._publishing = asyncio.Semaphore(4)
        self._background = Background("publishing new runs")

    async def prepare(self, tenant: str, request: RunRequest, idempotency_key: str | None) -> Submission:
        """Validate a request against the catalog and plan its first tasks; raises Refused."""
        if not tracing.enabled:
            return await self._prepare(tenant, request, idempotency_key)
        with tracing.tracer.start_as_current_span("plan"):
            submission = await self._prepare(tenant, request, idempotency_key)
            submission.traceparent = tracing.current_traceparent()
            return submission

    async def _prepare(self, tenant: str, request: RunRequest, idempotency_key: str | None) -> Submission:
        if sum(target is not None for target in (request.workflow, request.tool, request.agent)) != 1:
            raise Invalid("validation-error", "give exactly one of 'workflow', 'tool' or 'agent'", "workflow")
        if request.queue is not None:
            check_name_field("queue", request.queue, "queue")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
            raise Invalid("validation-error", "an idempotency key has 1 to 200 characters", "Idempotency-Key")
        input_json = json_text(request.input)
        targets = [request.workflow, request.tool, request.queue, request.input]
        digest = hashlib.sha256(encode(targets if request.agent is None else [*targets, request.agent])).hexdigest()
        run_id, now = new_id(), time.time()
        outcome = None
        if request.tool is not None:
            name, version = split_ref(request.tool, "tool")
            tool = await self._catalog.tool(tenant, name, version)
            _check_input(tool, request.input, "input")
            call = ToolCall(tool.name, tool.version, request.queue or tool.queue, request.input)
            first = [plan_instance(tenant, run_id, Start(tool.name, tool.name, call), tool, now)]
            kind, target_name, target_version = "tool", tool.name, tool.version
        else:
            if request.agent is not None:
                name, version = split_ref(request.agent, "agent")
                workflow = await self._catalog.agent_workflow(tenant, name, version)
            else:
                assert request.workflow is not None
                name, version = split_ref(request.workflow, "workflow")
                workflow = await self._catalog.workflow(tenant, name, version)
            if workflow.input_validator is not None and (
                problem := schema_problem(workflow.input_validator, request.input, "input")
            ):
                raise Invalid("input-schema-mismatch", problem, "input")
            decision = decide(workflow.plan, request.input, {})
            if decision.outcome is not None and decision.outcome.state == RunState.FAILED:
                raise Invalid("validation-error", decision.outcome.error or "input is unusable", "input")
            outcome = decision.outcome
            first = [self._first(tenant, run_id, start, workflow, request.queue, now) for start in decision.start]
            kind = "agent" if request.agent is not None else "workflow"
            target_name, target_version = workflow.name, workflow.version
        return Submission(
            tenant=tenant,
            run_id=run_id,
            target_kind=kind,
            target_name=target_name,
            target_version=target_version,
            input=input_json,
            idempotency_key=idempotency_key,
            request_digest=digest,
            tasks=first,
            outcome=outcome,
        )

    @staticmethod
    def _first(tenant: str, run_id: str, start: Start, workflow: Workflow, queue: str | None, now: float) -> Planned:
        """A first step instance; ``queue``, when the request names one, replaces its tool call's queue."""
        action = start.action
        if not isinstance(action, ToolCall):
            return plan_instance(tenant, run_id, start, None, now)
        tool = workflow.tool(action)
        _check_input(tool, action.input, f"steps.{start.key}.input")
        if queue is not None:
            start = dataclasses.replace(start, action=dataclasses.replace(action, queue=queue))
        return plan_instance(tenant, run_id, start, tool, now)

    def wake(self) -> None:
        self._wake.set()

    async def submit(self, submissions: list[Submission]) -> list[Accepted]:
        """Queue submissions for the next batch and wait until they are committed."""
        self._pending.extend(submissions)
        self._wake.set()
        return list(await asyncio.gather(*(s.future for s in submissions)))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await self._flush(batch)
                except Exception as error:
                    log.warning("writing a batch of %d run(s) failed: %s", len(batch), error)
                    for submission in batch:
                        if not submission.future.done():
                            submission.future.set_exception(
                                Unavailable("unavailable", f"the run store is unavailable: {error}")
                            )

    async def _flush(self, batch: list[Submission]) -> None:
        first_by_key: dict[tuple[str, str], Submission] = {}
        writes: list[Submission] = []
        repeats: list[Submission] = []
        for submission in batch:
            key = submission.idempotency_key
            if key is not None and (submission.tenant, key) in first_by_key:
                repeats.append(submission)
            else:
                if key is not None:
                    first_by_key[(submission.tenant, key)] = submission
                writes.append(submission)

        new_runs, new_tasks, new_events, dispatches = [], [], [], []
        for submission in writes:
            log_ = EventLog(submission.tenant, submission.run_id, 0)
            target = f"{submission.target_name}@{submission.target_version}"
            log_.add("run.created", {submission.target_kind: target})
            for planned in submission.tasks:
                new_tasks.append(planned.task)
                log_.add(planned.event, planned.data)
                if planned.dispatch is not None:
                    dispatch = planned.dispatch
                    if submission.traceparent is not None:
                        dispatch = dataclasses.replace(dispatch, traceparent=submission.traceparent)
                    dispatches.append(dispatch)
            state, output = RunState.RUNNING, None
            if submission.outcome is not None:
                state, output = submission.outcome.state, json_text(submission.outcome.output)
                metrics.RUNS.add((submission.tenant, submission.target_kind, state))
                log_.add(f"run.{state}", {"output": submission.outcome.output})
            new_events.extend(log_.events)
            new_runs.append(
                runs.NewRun(
                    id=submission.run_id,
                    tenant=submission.tenant,
                    target_kind=submission.target_kind,
                    target_name=submission.target_name,
                    target_version=submission.target_version,
                    state=state,
                    input=submission.input,
                    idempotency_key=submission.idempotency_key,
                    request_digest=submission.request_digest,
                    last_seq=log_.last_seq,
                    output=output,
                    actor=submission.actor,
                    source=submission.source,
                )
            )
        inserted = await runs.create_runs(self._pool, new_runs, new_tasks, new_events)
        metrics.SUBMIT_BATCH.observe(len(new_runs))

        lost = [s for s in writes if s.run_id not in inserted] + repeats
        existing = await self._existing(lost)
        for submission in writes:
            if submission.run_id in inserted:
                state = RunState.RUNNING if submission.outcome is None else submission.outcome.state
                submission.future.set_result(Accepted(run_id=submission.run_id, created=True, state=state))
        for submission in lost:
            answer = existing[id(submission)]
            if isinstance(answer, Accepted):
                submission.future.set_result(answer)
            else:
                submission.future.set_exception(answer)

        tasks_by_run: dict[str, list[runs.NewTask]] = {}
        for task in new_tasks:
            tasks_by_run.setdefault(task.run_id, []).append(task)
        for run in new_runs:
            if run.id in inserted:
                self._cache.put(WorkingRun.new(run, tasks_by_run.get(run.id, [])))

        fresh = [d for d in dispatches if d.run_id in inserted]
        events_by_run: dict[str, list[runs.NewEvent]] = {}
        for event in new_events:
            if event.run_id in inserted:
                events_by_run.setdefault(event.run_id, []).append(event)
        tenants = {run.id: run.tenant for run in new_runs}
        self._background.spawn(self._publish(fresh, [outgoing(tenants[r], r, ev) for r, ev in events_by_run.items()]))

    async def _existing(self, submissions: list[Submission]) -> dict[int, "Accepted | Refused"]:
        """Answer for submissions whose idempotency key was already used: the same run, or a conflict."""
        answers: dict[int, Accepted | Refused] = {}
        by_tenant: dict[str, list[Submission]] = {}
        for submission in submissions:
            by_tenant.setdefault(submission.tenant, []).append(submission)
        for tenant, group in by_tenant.items():
            found = await runs.find_by_idempotency_keys(
                self._pool, tenant, [s.idempotency_key for s in group if s.idempotency_key]
            )
            for submission in group:
                run = found.get(submission.idempotency_key or "")
                if run is None:
                    answers[id(submission)] = Unavailable("unavailable", "the run could not be recorded; retry")
                elif run.request_digest != submission.request_digest:
                    answers[id(submission)] = Conflict(
                        "idempotency-conflict",
                        f"idempotency key {submission.idempotency_key!r} was used for another request (run {run.id})",
                        "Idempotency-Key",
                    )
                else:
                    answers[id(submission)] = Accepted(run_id=run.id, created=False, state=run.state)
        return answers

    async def _publish(self, dispatches: list[Dispatch], events: list[Any]) -> None:
        async with self._publishing:
            try:
                await self._dispatcher.dispatch_new(dispatches)
                await self._dispatcher.publish_events(events)
            except Exception as error:
                # Held, they are released by the next look at held tasks; admitted, the outbox relay publishes them.
                log.warning("publishing %d task(s) failed; they are published later: %s", len(dispatches), error)

    async def close(self) -> None:
        await self._background.close()


def _check_input(tool: Tool, document: Any, field: str) -> None:
    if tool.input_validator is not None and (problem := schema_problem(tool.input_validator, document, field)):
        raise Invalid("input-schema-mismatch", problem, field)
