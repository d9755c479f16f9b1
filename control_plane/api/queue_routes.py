"""Routes of back-pressure: the tenant's and its queues' in-flight limits and priorities."""

from typing import Any

from litestar import Request, Response, get, put

from bus.streams import queue_backlogs
from control_plane.api import views
from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.catalog.documents import InFlightLimit, QueueSettings, check_name_field
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import limits as in_flight


@get("/v1/queues", opt={"permission": ("queues", "read")})
async def list_queues(services: Services, identity: Identity) -> Response[bytes]:
    """The tenant's in-flight limit and, per queue, its limit, priority, tasks in flight, tasks held, and its
    backlog on the bus: tasks no worker has taken yet (``depth``) and how long the oldest has waited."""
    return await _queues(services, identity.tenant)


@put("/v1/queues/{queue:str}", opt={"permission": ("queues", "write")})
async def configure_queue(
    request: Request[Any, Any, Any], queue: str, data: QueueSettings, services: Services, identity: Identity
) -> Response[bytes]:
    """Set a queue's in-flight limit and priority; tasks over the limit wait, held, until slots free."""
    check_name_field("queue", queue, "queue")
    limit = in_flight.QueueLimit(identity.tenant, queue, data.max_in_flight, data.priority)
    return await _configure(request, services, identity, limit, "queue.configure")


@put("/v1/limits", opt={"permission": ("queues", "write")})
async def configure_limits(
    request: Request[Any, Any, Any], data: InFlightLimit, services: Services, identity: Identity
) -> Response[bytes]:
    """Set the tenant's own in-flight limit over all of its queues (never above the platform's ceiling)."""
    limit = in_flight.QueueLimit(identity.tenant, in_flight.TENANT_WIDE, data.max_in_flight)
    return await _configure(request, services, identity, limit, "limits.configure")


async def _configure(
    request: Request[Any, Any, Any], services: Services, identity: Identity, limit: in_flight.QueueLimit, action: str
) -> Response[bytes]:
    await in_flight.put_limit(services.pool, limit)
    services.dispatcher.admission.configure([limit])
    services.dispatcher.limits_changed(identity.tenant)
    target = limit.queue or identity.tenant
    await _audit(request, services, identity, action, f"{target}:{limit.max_in_flight}:{limit.priority}", "set")
    return await _queues(services, identity.tenant)


async def _queues(services: Services, tenant: str) -> Response[bytes]:
    await services.dispatcher.refresh(tenant)  # what every control plane admitted, not this one alone
    return _json(views.queues(services.dispatcher.admission, tenant, await queue_backlogs(services.bus, tenant)))


ROUTES = [list_queues, configure_queue, configure_limits]
