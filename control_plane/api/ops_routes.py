"""Routes of operations: the worker fleet, liveness and readiness, Prometheus metrics, the OpenAPI document."""

from typing import Any

from litestar import Request, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from control_plane.api import views
from control_plane.api.answers import json_response as _json
from control_plane.security.identity import Identity
from control_plane.services import Services


@get("/v1/workers", opt={"permission": ("workers", "read")})
async def list_workers(services: Services, identity: Identity) -> Response[bytes]:
    """The live worker fleet: queues, load and last heartbeat (workers whose heartbeats stopped drop out)."""
    beats = await services.fleet.members()
    return _json({"items": [views.worker(b) for b in beats if b.tenant == identity.tenant]})


@get("/healthz")
async def healthz(services: Services) -> Response[bytes]:
    """Alive; with the installation's id, which ``af up`` records beside the local stack's API."""
    return _json({"status": "ok", "stack_id": services.stack_id})


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


ROUTES = [list_workers, healthz, readyz, prometheus, openapi]
