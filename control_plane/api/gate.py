"""The gate of every /v1 route: who is calling (authentication), whether the tenant is within its request
rate, and whether the caller's role allows the route's permission in the tenant (authorization).

A route declares its permission as ``opt={"permission": (object, action)}``; the tenant it acts in is the
caller's own, or the path or query parameter named by ``opt["domain"]`` when there is one (e.g. the tenant
whose keys are made).
"""

from typing import Any

from litestar import Request

from control_plane.api.answers import source_address
from control_plane.errors import Forbidden, Refused
from control_plane.security.authentication import KeyRejected, sends_api_key
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import audit

UNKNOWN_TENANT = "-"
"""The tenant of audit rows whose caller is unknown (no valid tenant name looks like it)."""


def permission_of(opt: dict[str, Any]) -> tuple[str, str] | None:
    permission = opt.get("permission")
    return permission if isinstance(permission, tuple) else None


def _domain(request: Request[Any, Any, Any], identity: Identity) -> str:
    name = request.route_handler.opt.get("domain")
    if name is None:
        return identity.tenant
    value = request.path_params.get(name) or request.query_params.get(name)
    return str(value) if value else identity.tenant


async def admit(request: Request[Any, Any, Any]) -> Identity:
    """The caller of a /v1 route, once authenticated, within its rate and authorized; else 401, 429 or 403."""
    services: Services = request.app.state.services
    source = source_address(request)
    authorization = request.headers.get("authorization")
    # Guessing the secret of a known key is braked per address on every route, as on /v1/auth/token.
    if sends_api_key(authorization):
        services.brake.check(source or "unknown")
    try:
        identity, check = await services.auth.identify(authorization)
    except KeyRejected as rejected:
        if rejected.tenant is not None:
            services.brake.failed(source or "unknown")
        actor = f"key:{rejected.prefix}" if rejected.prefix else "anonymous"
        await _failed(services, rejected.tenant or UNKNOWN_TENANT, actor, request, source)
        raise
    except Refused:
        await _failed(services, UNKNOWN_TENANT, "anonymous", request, source)
        raise
    if check is not None and check.fresh:
        entry = audit.AuditEntry(identity.tenant, identity.actor, "auth.key", request.url.path, "authenticated", source)
        await audit.record(services.pool, entry)
    await services.quotas.admit_request(identity.tenant)
    permission = permission_of(request.route_handler.opt)
    if permission is None:  # create_app refuses such a route; this keeps a mistake from opening one
        raise Forbidden("forbidden", f"{request.url.path} declares no permission")
    tenant = _domain(request, identity)
    try:
        await services.authorizer.require(identity, tenant, *permission)
    except Refused:
        target = f"{permission[0]}:{permission[1]}@{tenant}"
        await audit.record(
            services.pool, audit.AuditEntry(identity.tenant, identity.actor, "authz", target, "denied", source)
        )
        raise
    return identity


async def _failed(
    services: Services, tenant: str, actor: str, request: Request[Any, Any, Any], source: str | None
) -> None:
    entry = audit.AuditEntry(tenant, actor, "auth.bearer", request.url.path, "rejected", source)
    await audit.record(services.pool, entry)
