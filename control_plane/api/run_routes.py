"""Routes of runs: start (one or a batch), list, read, cancel, signal, and the live event stream."""

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bus import WatchLost, subjects
from bus.messages import json_text
from bus.states import RunState
from bus.watch import watch
from control_plane import metrics
from control_plane.api import transcripts, views
from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.api.answers import source_address
from control_plane.api.problems import Problem
from control_plane.catalog.documents import BatchRequest, RunRequest, SignalRequest, convert
from control_plane.engine.events import FINAL_EVENT_TYPES
from control_plane.errors import Refused
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import llm_calls, run_reads
from registry.runs import RunRow

log = logging.getLogger(__name__)

SSE_POLL_SECONDS = 1.0
TRANSCRIPT_CALLS = 10_000
"""Enough for every model call of an agent run: at most 201 turns, each tried a few times."""


@post("/v1/runs", status_code=201, opt={"permission": ("runs", "write")})
async def start_run(
    request: Request[Any, Any, Any],
    data: RunRequest,
    services: Services,
    identity: Identity,
    idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key", required=False)] = None,
) -> Response[bytes]:
    """Start a run of a workflow or of a single tool; the same Idempotency-Key returns the same run."""
    await services.quotas.admit_runs(identity.tenant, 1)
    submission = await services.submitter.prepare(identity.tenant, data, idempotency_key or data.idempotency_key)
    submission.actor, submission.source = identity.actor, source_address(request)
    (accepted,) = await services.submitter.submit([submission])
    metrics.RUNS_SUBMITTED.labels(identity.tenant, submission.target_kind).inc()
    return _json(
        {"id": accepted.run_id, "state": RunState.RUNNING, "created": accepted.created},
        201 if accepted.created else 200,
    )


@post("/v1/runs:batch", status_code=200, opt={"permission": ("runs", "write")})
async def start_runs(
    request: Request[Any, Any, Any], data: BatchRequest, services: Services, identity: Identity
) -> Response[bytes]:
    """Start up to 1,000 runs; each item is answered with its run id or its own problem."""
    await services.quotas.admit_runs(identity.tenant, len(data.runs))
    answers: list[dict[str, Any] | None] = [None] * len(data.runs)
    prepared = []
    for index, item in enumerate(data.runs):
        try:
            run = convert(item, RunRequest, f"runs[{index}]")
            submission = await services.submitter.prepare(identity.tenant, run, run.idempotency_key)
            submission.actor, submission.source = identity.actor, source_address(request)
            prepared.append((index, submission))
        except Refused as refusal:
            answers[index] = {"problem": Problem.of(refusal).as_dict()}
    if prepared:
        try:
            accepted = await services.submitter.submit([s for _, s in prepared])
        except Refused as refusal:
            for index, _ in prepared:
                answers[index] = {"problem": Problem.of(refusal).as_dict()}
        else:
            for (index, submission), outcome in zip(prepared, accepted, strict=True):
                answers[index] = {"id": outcome.run_id, "created": outcome.created}
                metrics.RUNS_SUBMITTED.labels(identity.tenant, submission.target_kind).inc()
    return _json({"items": answers})


@get("/v1/runs", opt={"permission": ("runs", "read")})
async def list_runs(
    services: Services,
    identity: Identity,
    run_state: Annotated[str | None, Parameter(query="state", required=False)] = None,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Response[bytes]:
    """Runs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    try:
        state = None if run_state is None else RunState(run_state)
    except ValueError:
        raise Problem(422, "validation-error", f"unknown state {run_state!r}", "state") from None
    if cursor is not None and subjects.ID_RE.fullmatch(cursor) is None:
        raise Problem(422, "validation-error", f"invalid cursor {cursor!r}: pass back a next_cursor", "cursor")
    rows = await run_reads.list_runs(services.pool, identity.tenant, state=state, before_id=cursor, limit=limit)
    next_cursor = rows[-1].id if len(rows) == limit else None
    return _json({"items": [views.run(r) for r in rows], "next_cursor": next_cursor})


async def _run_row(services: Services, tenant: str, run_id: str) -> RunRow:
    # An id that is not a UUID cannot name a run: answered like any unknown run.
    row = await run_reads.get_run(services.pool, tenant, run_id) if subjects.ID_RE.fullmatch(run_id) else None
    if row is None:
        raise Problem(404, "not-found", f"no run {run_id}", "id")
    return row


@get("/v1/runs/{run_id:str}", opt={"permission": ("runs", "read")})
async def get_run(run_id: str, services: Services, identity: Identity) -> Response[bytes]:
    """A run with its tasks."""
    row = await _run_row(services, identity.tenant, run_id)
    return _json(views.run(row, await run_reads.get_tasks(services.pool, run_id)))


@get("/v1/runs/{run_id:str}/transcript", opt={"permission": ("runs", "read")})
async def get_transcript(run_id: str, services: Services, identity: Identity) -> Response[bytes]:
    """An agent run's turns: the messages each added, the model's answer, the tool calls it asked for with
    their results, and the tokens and cost of each turn and of the run. 409 for a run of no agent."""
    row = await _run_row(services, identity.tenant, run_id)
    if row.target_kind != "agent":
        raise Problem(409, "not-an-agent-run", f"run {run_id} is a {row.target_kind}'s, not an agent's", "id")
    tasks = await run_reads.get_tasks(services.pool, run_id)
    calls = await llm_calls.recent(services.pool, identity.tenant, run_id=run_id, limit=TRANSCRIPT_CALLS)
    return _json(transcripts.transcript(row, tasks, calls))


@post("/v1/runs/{run_id:str}/cancel", status_code=200, opt={"permission": ("runs", "cancel")})
async def cancel_run(
    request: Request[Any, Any, Any], run_id: str, services: Services, identity: Identity
) -> Response[bytes]:
    """Cancel a run: its unfinished tasks are marked cancelled and late results are ignored."""
    row = await services.orchestrator.cancel(identity.tenant, run_id)
    await _audit(request, services, identity, "run.cancel", run_id, "cancelled")
    return _json(views.run(row))


@post("/v1/runs/{run_id:str}/signal", status_code=202, opt={"permission": ("runs", "signal")})
async def signal_run(
    request: Request[Any, Any, Any], run_id: str, data: SignalRequest, services: Services, identity: Identity
) -> Response[bytes]:
    """Send a named signal to a run waiting for it (human in the loop); its data becomes the waiting step's
    output. 409 when the run is not waiting for that signal now."""
    step = await services.orchestrator.signal(identity.tenant, run_id, data.name, data.data)
    await _audit(request, services, identity, "run.signal", f"{run_id}:{data.name}", "delivered")
    return _json({"run_id": run_id, "signal": data.name, "step": step}, 202)


@get("/v1/runs/{run_id:str}/events", opt={"permission": ("runs", "read")})
async def run_events(
    run_id: str,
    services: Services,
    identity: Identity,
    last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
) -> ServerSentEvent:
    """The run's events as Server-Sent Events, live, resumable with ``Last-Event-ID``; ends after the final one."""
    await _run_row(services, identity.tenant, run_id)
    try:
        after = int(last_event_id) if last_event_id else 0
    except ValueError:
        raise Problem(422, "validation-error", "Last-Event-ID must be a whole number", "Last-Event-ID") from None
    return ServerSentEvent(_event_stream(services, identity.tenant, run_id, after))


async def _event_stream(
    services: Services, tenant: str, run_id: str, after: int
) -> AsyncIterator[ServerSentEventMessage]:
    # PostgreSQL is the record; NATS only says "look again", so a lost notification costs at most
    # one poll interval and never a gap.
    looks = watch(services.bus, subjects.events(tenant, run_id), SSE_POLL_SECONDS)
    try:
        async with contextlib.aclosing(looks):
            async for _ in looks:
                for row in await run_reads.events_after(services.pool, tenant, run_id, after):
                    after = row.seq
                    yield ServerSentEventMessage(data=json_text(views.event(row)), event=row.type, id=row.seq)
                    if row.type in FINAL_EVENT_TYPES:
                        return
    except WatchLost as error:
        # The connection to NATS is closed (the control plane is stopping): the client resumes with Last-Event-ID.
        log.warning("ending the event stream of run %s after event %d: %s", run_id, after, error)


ROUTES = [start_run, start_runs, list_runs, get_run, get_transcript, cancel_run, signal_run, run_events]
