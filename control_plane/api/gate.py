"""The gate of every /v1 route: who is calling (authentication), whether the tenant is within its request
rate, and whether the caller's role allows the route's permission in the tenant (authorization).

A route declares its permission as ``opt={"permission": (object, action)}``; the tenant it acts in is the
caller's own, or the path or query parameter named by ``opt["domain"]`` when there is one (e.g. the tenant
whose keys are made).
"""

from typing import Any

from litestar import Request

from control_plane.api.answers import record, record_as, source_address
from control_plane.errors import Forbidden, Refused
from control_plane.security.authentication import KeyRejected, sends_api_key
from control_plane.security.identity import Identity
from control_plane.services import Services

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
        if rejected.check.guessed:
            services.brake.failed(source or "unknown")
        actor = f"key:{rejected.prefix}" if rejected.prefix else "anonymous"
        await _failed(request, services, rejected.tenant or UNKNOWN_TENANT, actor)
        raise
    except Refused:
        await _failed(request, services, UNKNOWN_TENANT, "anonymous")
        raise
    if check is not None and check.fresh:
        await record(request, services, identity, "auth.key", request.url.path, "authenticated")
    await services.quotas.admit_request(identity.tenant)
    permission = permission_of(request.route_handler.opt)
    if permission is None:  # create_app refuses such a route; this keeps a mistake from opening one
        raise Forbidden("forbidden", f"{request.url.path} declares no permission")
    tenant = _domain(request, identity)
    try:
        await services.authorizer.require(identity, tenant, *permission)
    except Refused:
        await record(request, services, identity, "authz", f"{permission[0]}:{permission[1]}@{tenant}", "denied")
        raise
    return identity


async def _failed(request: Request[Any, Any, Any], services: Services, tenant: str, actor: str) -> None:
    await record_as(
        request, services, tenant=tenant, actor=actor, action="auth.bearer", target=request.url.path, outcome="rejected"
    )
