"""The HTTP API (v1) on Litestar: routes, problem documents, authentication of every /v1 route."""

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post, put
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus import subjects
from bus.states import RunState
from control_plane import metrics
from control_plane.api import views
from control_plane.api.access_routes import ROUTES as ACCESS_ROUTES
from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.api.answers import source_address
from control_plane.api.gate import admit, permission_of
from control_plane.api.problems import PROBLEM_MEDIA_TYPE, Problem
from control_plane.catalog.documents import (
    BatchRequest,
    QueueSettings,
    RunRequest,
    SignalRequest,
    TenantLimits,
    ToolSpec,
    check_name_field,
    check_version,
    convert,
)
from control_plane.engine.events import FINAL_EVENT_TYPES
from control_plane.errors import Refused, field_from_msgspec
from control_plane.security.authentication import Identity
from control_plane.services import Services
from registry import catalog as store
from registry import limits, run_reads
from registry.runs import RunRow

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
SSE_POLL_SECONDS = 1.0


def _problem_response(problem: Problem) -> Response[bytes]:
    return Response(
        _encode(problem.body()), status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=problem.headers
    )


def _on_problem(_: Request[Any, Any, Any], problem: Problem) -> Response[bytes]:
    return _problem_response(problem)


def _on_refused(_: Request[Any, Any, Any], refusal: Refused) -> Response[bytes]:
    return _problem_response(Problem.of(refusal))


def _on_validation(_: Request[Any, Any, Any], error: ValidationException) -> Response[bytes]:
    # Litestar keeps msgspec's message, with the full path of the offending field, as the cause.
    cause = error.__cause__
    if isinstance(cause, msgspec.ValidationError):
        detail, field = field_from_msgspec(str(cause))
        if field is not None:
            field = field.removeprefix("data").lstrip(".") or None
    else:
        extra = error.extra if isinstance(error.extra, list) and error.extra else [{}]
        detail, field = str(extra[0].get("message", error.detail)), extra[0].get("key")
    return _problem_response(Problem(422, "validation-error", detail, field))


def _on_http(_: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    if error.status_code == 400:
        return _problem_response(Problem(400, "malformed-json", f"the body is not valid JSON: {error.detail}"))
    slug = {401: "unauthorized", 404: "not-found", 405: "not-allowed", 503: "unavailable"}.get(
        error.status_code, "validation-error"
    )
    return _problem_response(Problem(error.status_code, slug, str(error.detail)))


def _on_crash(_: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    log.exception("request failed", exc_info=error)
    return _problem_response(Problem(500, "internal", "the control plane failed to answer; see its log"))


async def _services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


# --- tools and workflows ----------------------------------------------------------------------------


@post("/v1/tools", status_code=201, opt={"permission": ("tools", "write")})
async def register_tool(
    request: Request[Any, Any, Any], data: ToolSpec, services: Services, identity: Identity
) -> Response[bytes]:
    """Register a tool version (immutable; the same content again is a no-op answered 200)."""
    entry, created = await services.catalog.register_tool(identity.tenant, data)
    return await _stored(request, services, identity, "tool.register", entry, created)


@get("/v1/tools", opt={"permission": ("tools", "read")})
async def list_tools(services: Services, identity: Identity) -> Response[bytes]:
    entries = await store.list_latest(services.pool, store.Kind.TOOL, identity.tenant)
    return _json({"items": [views.catalog_entry(e) for e in entries]})


@get("/v1/tools/{name:str}/versions/{version:str}", opt={"permission": ("tools", "read")})
async def get_tool(name: str, version: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _get_entry(services, store.Kind.TOOL, identity.tenant, name, version)


@post("/v1/workflows", status_code=201, opt={"permission": ("workflows", "write")})
async def apply_workflow(
    request: Request[Any, Any, Any], data: dict[str, Any], services: Services, identity: Identity
) -> Response[bytes]:
    """Apply a workflow version: validated, its tools pinned to versions, stored immutably."""
    entry, created = await services.catalog.register_workflow(identity.tenant, data)
    return await _stored(request, services, identity, "workflow.apply", entry, created)


async def _stored(
    request: Request[Any, Any, Any],
    services: Services,
    identity: Identity,
    action: str,
    entry: store.Entry,
    created: bool,
) -> Response[bytes]:
    """Answer a registration (201 created, 200 unchanged) and record it in the audit trail."""
    outcome = "created" if created else "unchanged"
    await _audit(request, services, identity, action, f"{entry.name}@{entry.version}", outcome)
    return _json(views.catalog_entry(entry), 201 if created else 200)


@get("/v1/workflows", opt={"permission": ("workflows", "read")})
async def list_workflows(services: Services, identity: Identity) -> Response[bytes]:
    entries = await store.list_latest(services.pool, store.Kind.WORKFLOW, identity.tenant)
    return _json({"items": [views.catalog_entry(e) for e in entries]})


@get("/v1/workflows/{name:str}/versions/{version:str}", opt={"permission": ("workflows", "read")})
async def get_workflow(name: str, version: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _get_entry(services, store.Kind.WORKFLOW, identity.tenant, name, version)


async def _get_entry(services: Services, kind: store.Kind, tenant: str, name: str, version: str) -> Response[bytes]:
    check_name_field("name", name, "name")
    wanted = None if version == "latest" else check_version(version)
    entry = await store.get(services.pool, kind, tenant, name, wanted)
    if entry is None:
        raise Problem(404, "not-found", f"no {kind.value[:-1]} {name}@{version}", "name")
    return _json(views.catalog_entry(entry))


# --- runs -------------------------------------------------------------------------------------------


@post("/v1/runs", status_code=201, opt={"permission": ("runs", "write")})
async def start_run(
    request: Request[Any, Any, Any],
    data: RunRequest,
    services: Services,
    identity: Identity,
    idempotency_key: Annotated[str | None, Parameter(header="Idempotency-Key", required=False)] = None,
) -> Response[bytes]:
    """Start a run of a workflow or of a single tool; the same Idempotency-Key returns the same run."""
    await services.limits.admit_runs(identity.tenant, 1)
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
    await services.limits.admit_runs(identity.tenant, len(data.runs))
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
    sub = await services.nc.subscribe(subjects.events(tenant, run_id))
    try:
        while True:
            for row in await run_reads.events_after(services.pool, tenant, run_id, after):
                after = row.seq
                yield ServerSentEventMessage(data=_encode(views.event(row)).decode(), event=row.type, id=row.seq)
                if row.type in FINAL_EVENT_TYPES:
                    return
            try:
                await sub.next_msg(timeout=SSE_POLL_SECONDS)
            except TimeoutError:
                continue
            except Exception:
                continue
            while sub.pending_msgs:
                await sub.next_msg(timeout=0)
    finally:
        await sub.unsubscribe()


# --- back-pressure ----------------------------------------------------------------------------------


@get("/v1/queues", opt={"permission": ("queues", "read")})
async def list_queues(services: Services, identity: Identity) -> Response[bytes]:
    """The tenant's in-flight limit and, per queue, its limit, priority, tasks in flight and tasks held."""
    return _json(views.queues(services.dispatcher.admission, identity.tenant))


@put("/v1/queues/{queue:str}", opt={"permission": ("queues", "write")})
async def configure_queue(
    request: Request[Any, Any, Any], queue: str, data: QueueSettings, services: Services, identity: Identity
) -> Response[bytes]:
    """Set a queue's in-flight limit and priority; tasks over the limit wait, held, until slots free."""
    check_name_field("queue", queue, "queue")
    limit = limits.QueueLimit(identity.tenant, queue, data.max_in_flight, data.priority)
    return await _configure(request, services, identity, limit, "queue.configure")


@put("/v1/limits", opt={"permission": ("queues", "write")})
async def configure_limits(
    request: Request[Any, Any, Any], data: TenantLimits, services: Services, identity: Identity
) -> Response[bytes]:
    """Set the tenant's own in-flight limit over all of its queues (never above the platform's ceiling)."""
    limit = limits.QueueLimit(identity.tenant, limits.TENANT_WIDE, data.max_in_flight)
    return await _configure(request, services, identity, limit, "limits.configure")


async def _configure(
    request: Request[Any, Any, Any], services: Services, identity: Identity, limit: limits.QueueLimit, action: str
) -> Response[bytes]:
    await limits.put_limit(services.pool, limit)
    services.dispatcher.admission.configure([limit])
    services.dispatcher.limits_changed(identity.tenant)
    target = limit.queue or identity.tenant
    await _audit(request, services, identity, action, f"{target}:{limit.max_in_flight}:{limit.priority}", "set")
    return _json(views.queues(services.dispatcher.admission, identity.tenant))


# --- fleet, health, metrics ------------------------------------------------------------------------


@get("/v1/workers", opt={"permission": ("workers", "read")})
async def list_workers(services: Services, identity: Identity) -> Response[bytes]:
    """The live worker fleet: queues, load and last heartbeat (workers whose heartbeats stopped drop out)."""
    beats = await services.fleet()
    return _json({"items": [views.worker(b) for b in beats if b.tenant == identity.tenant]})


@get("/healthz")
async def healthz() -> Response[bytes]:
    return _json({"status": "ok"})


@get("/readyz")
async def readyz(services: Services) -> Response[bytes]:
    checks = await services.checks()
    ready = all(value == "ok" for value in checks.values())
    return _json({"status": "ready" if ready else "not-ready", "checks": checks}, 200 if ready else 503)


@get("/metrics")
async def prometheus() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@get("/openapi.json", include_in_schema=False)
async def openapi(request: Request[Any, Any, Any]) -> Response[bytes]:
    return _json(request.app.openapi_schema.to_schema())


def create_app(lifespan: Any) -> Litestar:
    app = Litestar(
        route_handlers=[
            register_tool,
            list_tools,
            get_tool,
            apply_workflow,
            list_workflows,
            get_workflow,
            start_run,
            start_runs,
            list_runs,
            get_run,
            cancel_run,
            signal_run,
            run_events,
            list_queues,
            configure_queue,
            configure_limits,
            list_workers,
            *ACCESS_ROUTES,
            healthz,
            readyz,
            prometheus,
            openapi,
        ],
        dependencies={"services": Provide(_services), "identity": Provide(admit)},
        exception_handlers={
            Problem: _on_problem,
            Refused: _on_refused,
            ValidationException: _on_validation,
            HTTPException: _on_http,
            Exception: _on_crash,
        },
        openapi_config=OpenAPIConfig(title="AgentFlow", version="1.0.0", path="/schema"),
        lifespan=[lifespan],
        logging_config=None,
        debug=False,
    )
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if "identity" in handler.parsed_fn_signature.parameters and permission_of(handler.opt) is None:
                raise RuntimeError(f"route {route.path} authenticates but declares no permission")
    return app
