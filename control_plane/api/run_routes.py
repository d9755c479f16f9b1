"""Routes of runs: start (one or a batch), list, read, cancel, signal, and the live event stream."""

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bus import WatchLost, subjects
from bus.messages import ToolLog, decode, json_text
from bus.states import FINAL_RUN_STATES, RunState
from bus.watch import watch_carrying
from control_plane import metrics
from control_plane.api import views
from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.api.answers import source_address
from control_plane.api.problems import Problem
from control_plane.api.run_ids import resolve_run_id
from control_plane.catalog.documents import BatchRequest, RunRequest, SignalRequest, convert
from control_plane.engine.events import FINAL_EVENT_TYPES
from control_plane.errors import Refused
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import run_reads
from registry.runs import RunRow

log = logging.getLogger(__name__)

SSE_POLL_SECONDS = 1.0
_EVENT_ID_RE = re.compile(r"[0-9]{1,18}")
"""An event's ``seq`` as its SSE id (at most 18 digits, so any fits in PostgreSQL's bigint)."""


@post("/v1/runs", status_code=201, opt={"permission": ("runs", "write")})
async def start_run(
    request: Request[Any, Any, Any],
    data: RunRequest,
    services: Services,
    identity: Identity,
    idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key", required=False)] = None,
) -> Response[bytes]:
    """Start a run of a workflow, a tool or an agent; the same Idempotency-Key returns the same run, in the
    state it is in now. The key is the header's or the body's ``idempotency_key``; two different ones are
    refused. The answer warns (``warnings``) of each queue of its first tasks that no live worker serves;
    ``require_worker`` refuses the run instead (409 ``no-worker``)."""
    if idempotency_key is not None and data.idempotency_key is not None and idempotency_key != data.idempotency_key:
        detail = (
            f"the Idempotency-Key header ({idempotency_key!r}) and the body's idempotency_key"
            f" ({data.idempotency_key!r}) differ: give one of them, or the same in both"
        )
        raise Problem(422, "validation-error", detail, "idempotency_key")
    await services.quotas.admit_runs(identity.tenant, 1)
    submission = await services.submitter.prepare(identity.tenant, data, idempotency_key or data.idempotency_key)
    warnings = services.fleet_view.check_served(identity.tenant, submission.queues, data.require_worker)
    submission.actor, submission.source = identity.actor, source_address(request)
    (accepted,) = await services.submitter.submit([submission])
    metrics.RUNS_SUBMITTED.labels(identity.tenant, submission.target_kind).inc()
    answer: dict[str, Any] = {"id": accepted.run_id, "state": accepted.state, "created": accepted.created}
    if warnings:
        answer["warnings"] = warnings
    return _json(answer, 201 if accepted.created else 200)


@post("/v1/runs:batch", status_code=200, opt={"permission": ("runs", "write")})
async def start_runs(
    request: Request[Any, Any, Any], data: BatchRequest, services: Services, identity: Identity
) -> Response[bytes]:
    """Start up to 1,000 runs; each item is answered with its run id (and warnings, as for one run) or its
    own problem."""
    await services.quotas.admit_runs(identity.tenant, len(data.runs))
    answers: list[dict[str, Any] | None] = [None] * len(data.runs)
    warnings: dict[int, list[dict[str, str]]] = {}
    prepared = []
    for index, item in enumerate(data.runs):
        try:
            run = convert(item, RunRequest, f"runs[{index}]")
            submission = await services.submitter.prepare(identity.tenant, run, run.idempotency_key)
            warnings[index] = services.fleet_view.check_served(identity.tenant, submission.queues, run.require_worker)
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
                answer: dict[str, Any] = {"id": outcome.run_id, "state": outcome.state, "created": outcome.created}
                if warnings[index]:
                    answer["warnings"] = warnings[index]
                answers[index] = answer
                metrics.RUNS_SUBMITTED.labels(identity.tenant, submission.target_kind).inc()
    return _json({"items": answers})


@get("/v1/runs", opt={"permission": ("runs", "read")})
async def list_runs(
    services: Services,
    identity: Identity,
    run_state: Annotated[str | None, Parameter(query="state", required=False)] = None,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 50,
    cursor: str | None = None,
    workflow: Annotated[str | None, Parameter(description="NAME or NAME@VERSION", required=False)] = None,
    since: Annotated[str | None, Parameter(description="ISO 8601 time; UTC unless it says", required=False)] = None,
    until: Annotated[str | None, Parameter(description="ISO 8601 time; UTC unless it says", required=False)] = None,
) -> Response[bytes]:
    """Runs, newest first, of one workflow (version) and created since a time (and before another) if asked;
    pass ``next_cursor`` back as ``cursor`` (with the same filters) for the next page."""
    try:
        state = None if run_state is None else RunState(run_state)
    except ValueError:
        raise Problem(422, "validation-error", f"unknown state {run_state!r}", "state") from None
    if cursor is not None and subjects.ID_RE.fullmatch(cursor) is None:
        raise Problem(422, "validation-error", f"invalid cursor {cursor!r}: pass back a next_cursor", "cursor")
    name, _, version = (workflow or "").partition("@")
    if workflow is not None and (subjects.NAME_RE.fullmatch(name) is None or workflow.endswith("@")):
        raise Problem(
            422, "validation-error", f"invalid workflow {workflow!r}: expected NAME or NAME@VERSION", "workflow"
        )
    rows = await run_reads.list_runs(
        services.pool,
        identity.tenant,
        state=state,
        before_id=cursor,
        limit=limit,
        workflow=name or None,
        version=version or None,
        since=None if since is None else _moment(since, "since"),
        until=None if until is None else _moment(until, "until"),
    )
    next_cursor = rows[-1].id if len(rows) == limit else None
    return _json({"items": [views.run(r) for r in rows], "next_cursor": next_cursor})


def _moment(text: str, field: str) -> datetime:
    """``since`` or ``until`` in UTC (which it is unless it says); a time before the year 1 there is no time."""
    try:
        moment = datetime.fromisoformat(text)
        return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise Problem(422, "validation-error", f"invalid {field} {text!r}: expected an ISO 8601 time", field) from None


async def _run_row(services: Services, tenant: str, given: str) -> RunRow:
    run_id = await resolve_run_id(services, tenant, given)
    row = await run_reads.get_run(services.pool, tenant, run_id)
    if row is None:
        raise Problem(404, "not-found", f"no run {given}", "id")
    return row


@get("/v1/runs/{run_id:str}", opt={"permission": ("runs", "read")})
async def get_run(run_id: str, services: Services, identity: Identity) -> Response[bytes]:
    """A run with its tasks; ``run_id`` may be the start of the id, if no other run's starts so."""
    row = await _run_row(services, identity.tenant, run_id)
    return _json(views.run(row, await run_reads.get_tasks(services.pool, row.id)))


@post("/v1/runs/{run_id:str}/cancel", status_code=200, opt={"permission": ("runs", "cancel")})
async def cancel_run(
    request: Request[Any, Any, Any], run_id: str, services: Services, identity: Identity
) -> Response[bytes]:
    """Cancel a run: its unfinished tasks are marked cancelled and late results are ignored."""
    run_id = await resolve_run_id(services, identity.tenant, run_id)
    row = await services.orchestrator.cancel(identity.tenant, run_id)
    await _audit(request, services, identity, "run.cancel", run_id, "cancelled")
    return _json(views.run(row))


@post("/v1/runs/{run_id:str}/signal", status_code=202, opt={"permission": ("runs", "signal")})
async def signal_run(
    request: Request[Any, Any, Any], run_id: str, data: SignalRequest, services: Services, identity: Identity
) -> Response[bytes]:
    """Send a named signal to a run waiting for it (human in the loop); its data becomes the waiting step's
    output. 409 when the run is not waiting for that signal now."""
    run_id = await resolve_run_id(services, identity.tenant, run_id)
    step = await services.orchestrator.signal(identity.tenant, run_id, data.name, data.data)
    await _audit(request, services, identity, "run.signal", f"{run_id}:{data.name}", "delivered")
    return _json({"run_id": run_id, "signal": data.name, "step": step}, 202)


@get("/v1/runs/{run_id:str}/events", opt={"permission": ("runs", "read")})
async def run_events(
    run_id: str,
    services: Services,
    identity: Identity,
    last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
    logs: Annotated[bool, Parameter(description="Also what the tools write to stderr, live", required=False)] = False,
) -> Response[Any]:
    """The run's events as Server-Sent Events, live, resumable with ``Last-Event-ID``; ends after the final one.

    A finished run with no event after ``Last-Event-ID`` answers 204 No Content, which tells an EventSource to
    stop reconnecting; an id past the run's last event is refused (422): no stream could ever reach it.

    With ``logs=true``, what its tools write to stderr while they run comes too, as ``log`` events without an
    id: what the last hour kept of it first, then as it is written (a reconnection gives them all again, each
    numbered by ``data.seq`` within its attempt; each task event keeps the tail for the record).
    """
    row = await _run_row(services, identity.tenant, run_id)
    after = _resumed_after(last_event_id)
    if after > row.last_seq:
        detail = f"run {row.id} has no event {after}: its last event is {row.last_seq}"
        raise Problem(422, "validation-error", detail, "Last-Event-ID")
    if after == row.last_seq and row.state in FINAL_RUN_STATES:
        return Response(b"", status_code=204)
    stream = event_stream(services, identity.tenant, row.id, after, logs)
    return ServerSentEvent(stream, headers={"Cache-Control": "no-store"})


def _resumed_after(last_event_id: str | None) -> int:
    if not last_event_id:
        return 0
    if _EVENT_ID_RE.fullmatch(last_event_id) is None:
        raise Problem(422, "validation-error", "Last-Event-ID must be a whole number", "Last-Event-ID")
    return int(last_event_id)


async def event_stream(
    services: Services, tenant: str, run_id: str, after: int, logs: bool
) -> AsyncIterator[ServerSentEventMessage]:
    """A run's events after ``after``, live, ending after its final one (the dashboard streams them too)."""
    # PostgreSQL is the record; NATS only says "look again", so a lost notification costs at most
    # one poll interval and never a gap.
    keepalive = services.settings.sse_keepalive_seconds
    carried = subjects.tool_logs(tenant, run_id) if logs else None
    looks = watch_carrying(services.bus, subjects.events(tenant, run_id), min(SSE_POLL_SECONDS, keepalive), carried)
    quiet_since = time.monotonic()
    try:
        async with contextlib.aclosing(looks):
            async for look in looks:
                pieces = _tool_logs(look.carried)
                for piece in pieces:
                    yield ServerSentEventMessage(data=json_text(views.tool_log(piece)), event="log")
                rows = await run_reads.events_after(services.pool, tenant, run_id, after)
                for row in rows:
                    after = row.seq
                    yield ServerSentEventMessage(data=json_text(views.event(row)), event=row.type, id=row.seq)
                    if row.type in FINAL_EVENT_TYPES:
                        return
                if rows or pieces:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= keepalive:
                    # No data, so no event for EventSource; proxies see the connection alive, and the id (the
                    # resumption point the client has already) lets parsers that report data-less messages
                    # (httpx-sse) see it too.
                    yield ServerSentEventMessage(data=None, comment="keep-alive", id=after)
                    quiet_since = time.monotonic()
    except WatchLost as error:
        # The connection to NATS is closed (the control plane is stopping): the client resumes with Last-Event-ID.
        log.warning("ending the event stream of run %s after event %d: %s", run_id, after, error)


def _tool_logs(payloads: tuple[bytes, ...]) -> list[ToolLog]:
    pieces = []
    for payload in payloads:
        try:
            pieces.append(decode(payload, ToolLog))
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            log.warning("ignoring a malformed piece of a tool's stderr: %s", error)
    return pieces


ROUTES = [start_run, start_runs, list_runs, get_run, cancel_run, signal_run, run_events]
