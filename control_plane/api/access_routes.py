"""Routes of tokens, tenants, API keys and the audit trail."""

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.params import Parameter

from control_plane.api.answers import json_response, record, record_as, source_address
from control_plane.api.gate import UNKNOWN_TENANT
from control_plane.api.problems import Problem, documented
from control_plane.catalog.documents import check_name_field
from control_plane.errors import Forbidden, NotFound
from control_plane.security.authentication import PLATFORM_ADMIN
from control_plane.security.identity import Identity
from control_plane.security.tokens import RefreshRejected
from control_plane.services import Services
from registry import audit, keys, tenants


class TokenRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    api_key: str


class RefreshRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    refresh_token: str


class TenantRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    admin_key: bool = True
    """Also make the tenant's first tenant-admin API key, shown once in the answer."""
    max_concurrent_runs: Annotated[int, msgspec.Meta(ge=0)] | None = None
    requests_per_second: Annotated[float, msgspec.Meta(gt=0)] | None = None


class KeyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str


# --- tokens -------------------------------------------------------------------------------------------


@post("/v1/auth/token", status_code=200)
async def issue_token(request: Request[Any, Any, Any], data: TokenRequest, services: Services) -> Response[bytes]:
    """Exchange an API key for an access token (EdDSA JWT) and a refresh token. Failed attempts are limited per
    source address (429 with Retry-After)."""
    source = source_address(request) or "unknown"
    services.brake.check(source)
    check = await services.auth.check_key(data.api_key)
    if check.identity is None:
        if not check.revoked:  # a revoked key is refused unverified: no guess of a secret
            services.brake.failed(source)
        actor = f"key:{check.prefix}" if check.prefix else "anonymous"
        await record_as(
            request,
            services,
            tenant=check.tenant or UNKNOWN_TENANT,
            actor=actor,
            action="auth.token",
            target="api_key",
            outcome="rejected",
        )
        raise Problem(401, "unauthorized", "the API key is not valid", "api_key")
    pair = await services.auth.issuer.issue(check.identity)
    await record(request, services, check.identity, "auth.token", "api_key", "issued")
    return json_response({**pair.body(), "stack_id": services.stack_id})


@post("/v1/auth/refresh", status_code=200)
async def refresh_token(request: Request[Any, Any, Any], data: RefreshRequest, services: Services) -> Response[bytes]:
    """Use a refresh token once for a new token pair. A refresh token used a second time revokes its whole
    login (every refresh and access token of its family)."""
    source = source_address(request) or "unknown"
    services.brake.check(source)
    try:
        pair, identity = await services.auth.issuer.refresh(data.refresh_token, services.auth.key_identity)
    except RefreshRejected as rejected:
        services.brake.failed(source)
        family = rejected.family
        tenant, actor = (family.tenant, f"key:{family.key_prefix}") if family else (UNKNOWN_TENANT, "anonymous")
        target = f"family:{family.id}" if family else "refresh_token"
        await record_as(
            request, services, tenant=tenant, actor=actor, action="auth.refresh", target=target, outcome="rejected"
        )
        raise
    await record(request, services, identity, "auth.refresh", "refresh_token", "issued")
    return json_response({**pair.body(), "stack_id": services.stack_id})


@post(
    "/v1/auth/revoke",
    status_code=200,
    responses=documented((400, "malformed-json"), (422, "validation-error"), (429, "rate-limited")),
)
async def revoke_token(request: Request[Any, Any, Any], data: RefreshRequest, services: Services) -> Response[bytes]:
    """End a login (token revocation, RFC 7009, for refresh tokens): the refresh token given, used or not, and
    every token of its login stop working. Needs no access token: the refresh token is the proof, as for
    refreshing. ``revoked`` is false when it named no live login (revoked already, or unknown: an unknown
    token counts as a failed attempt of its source address, as on refresh)."""
    source = source_address(request) or "unknown"
    services.brake.check(source)
    family, revoked = await services.auth.issuer.revoke(data.refresh_token)
    if family is None:
        services.brake.failed(source)
        tenant, actor, target = UNKNOWN_TENANT, "anonymous", "refresh_token"
    else:
        tenant, actor, target = family.tenant, f"key:{family.key_prefix}", f"family:{family.id}"
    outcome = "revoked" if revoked else "unchanged" if family else "rejected"
    await record_as(request, services, tenant=tenant, actor=actor, action="auth.revoke", target=target, outcome=outcome)
    return json_response({"revoked": revoked})


@get("/.well-known/jwks.json")
async def jwks(services: Services) -> Response[bytes]:
    """The public keys that verify access tokens (OKP/Ed25519 JWKs named by ``kid``)."""
    return json_response(await services.auth.issuer.jwks())


@post("/v1/auth/signing-keys", status_code=201, opt={"permission": ("signing-keys", "write")})
async def rotate_signing_key(
    request: Request[Any, Any, Any], services: Services, identity: Identity
) -> Response[bytes]:
    """Add a signing key: it signs new access tokens; tokens signed by the older keys keep verifying."""
    kid = await services.auth.issuer.rotate()
    await record(request, services, identity, "signing-key.rotate", kid, "created")
    return json_response(await services.auth.issuer.jwks(), 201)


# --- tenants and keys -----------------------------------------------------------------------------------


def _tenant(row: tenants.Tenant) -> dict[str, Any]:
    return {
        "name": row.name,
        "created_at": row.created_at.isoformat(),
        "max_concurrent_runs": row.max_concurrent_runs,
        "requests_per_second": row.requests_per_second,
    }


@get("/v1/tenants", opt={"permission": ("tenants", "read")})
async def list_tenants(services: Services, identity: Identity) -> Response[bytes]:
    return json_response({"items": [_tenant(t) for t in await tenants.list_tenants(services.pool)]})


@post("/v1/tenants", status_code=201, opt={"permission": ("tenants", "write")})
async def create_tenant(
    request: Request[Any, Any, Any], data: TenantRequest, services: Services, identity: Identity
) -> Response[bytes]:
    """Create a tenant (platform admins); with ``admin_key`` (the default) its first tenant-admin API key is in
    the answer, once."""
    check_name_field("tenant", data.name, "name")
    row = await tenants.create_tenant(services.pool, data.name, data.max_concurrent_runs, data.requests_per_second)
    if row is None:
        raise Problem(409, "tenant-exists", f"tenant {data.name} exists already", "name")
    await record(request, services, identity, "tenant.create", data.name, "created")
    answer = _tenant(row)
    if data.admin_key:
        answer["admin_key"] = await _new_key(request, services, identity, data.name, "tenant-admin")
    return json_response(answer, 201)


@post("/v1/tenants/{name:str}/keys", status_code=201, opt={"permission": ("keys", "write"), "domain": "name"})
async def create_key(
    request: Request[Any, Any, Any], name: str, data: KeyRequest, services: Services, identity: Identity
) -> Response[bytes]:
    """A new API key of tenant ``name`` with ``role``, shown once (tenant admins of that tenant, platform admins)."""
    check_name_field("tenant", name, "name")
    if await tenants.get_tenant(services.pool, name) is None:
        raise Problem(404, "not-found", f"no tenant {name}", "name")
    roles = services.authorizer.roles()
    if data.role not in roles:
        raise Problem(422, "validation-error", f"unknown role {data.role!r}; one of {', '.join(roles)}", "role")
    if data.role == PLATFORM_ADMIN and identity.role != PLATFORM_ADMIN:
        raise Problem(403, "forbidden", f"role {identity.role} lacks keys:write of role {PLATFORM_ADMIN}")
    return json_response(await _new_key(request, services, identity, name, data.role), 201)


async def _new_key(
    request: Request[Any, Any, Any], services: Services, identity: Identity, tenant: str, role: str
) -> dict[str, str]:
    key, made = await services.auth.create_key(tenant, role)
    await services.authorizer.load()
    await record(request, services, identity, "key.create", f"{made.actor}@{tenant}:{role}", "created")
    return {"key": key, "id": made.key_prefix, "prefix": made.key_prefix, "tenant": tenant, "role": role}


def _key(row: keys.KeyInfo) -> dict[str, Any]:
    return {
        "id": row.prefix,
        "tenant": row.tenant,
        "role": row.role,
        "created_at": row.created_at.isoformat(),
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
    }


@get("/v1/keys", opt={"permission": ("keys", "read"), "domain": "tenant"})
async def list_keys(
    services: Services, identity: Identity, tenant: str | None = None, include_revoked: bool = False
) -> Response[bytes]:
    """The API keys of the caller's tenant (platform admins may name another ``tenant``), by id (the key's
    prefix), never the key itself; revoked ones too with ``include_revoked``."""
    if tenant is not None:
        check_name_field("tenant", tenant, "tenant")
    rows = await keys.list_keys(services.pool, tenant or identity.tenant, include_revoked=include_revoked)
    return json_response({"items": [_key(row) for row in rows]})


@delete("/v1/keys/{key_id:str}", status_code=200, opt={"permission": ("keys", "write")})
async def revoke_key(
    request: Request[Any, Any, Any], key_id: str, services: Services, identity: Identity
) -> Response[bytes]:
    """Revoke an API key (tenant admins of its tenant, platform admins): it fails authentication from now
    on, and every access and refresh token got with it is revoked too. Revoking a revoked key changes nothing."""
    found = await keys.key_info(services.pool, key_id)
    if found is not None and found.tenant != identity.tenant:
        try:
            await services.authorizer.require(identity, found.tenant, "keys", "write")
        except Forbidden:
            found = None  # another tenant's key is not there for this caller
    if found is None:
        raise NotFound("not-found", f"no API key {key_id}", "id")
    if found.role == PLATFORM_ADMIN and identity.role != PLATFORM_ADMIN:
        raise Forbidden("forbidden", f"role {identity.role} lacks keys:write of role {PLATFORM_ADMIN}")
    if found.revoked_at is not None:
        return json_response(_key(found))
    revoked = await services.auth.revoke_key(key_id)
    await services.authorizer.load()
    await record(request, services, identity, "key.revoke", f"key:{key_id}@{found.tenant}:{found.role}", "revoked")
    # None: another request revoked it meanwhile.
    return json_response(_key(revoked or await keys.key_info(services.pool, key_id) or found))


# --- audit ----------------------------------------------------------------------------------------------


@get("/v1/audit", opt={"permission": ("audit", "read"), "domain": "tenant"})
async def list_audit(
    services: Services,
    identity: Identity,
    tenant: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> Response[bytes]:
    """The tenant's audit trail, newest first (tenant admins; platform admins may name another ``tenant``)."""
    if tenant is not None:
        check_name_field("tenant", tenant, "tenant")
    rows = await audit.recent(services.pool, tenant or identity.tenant, limit)
    return json_response(
        {
            "items": [
                {
                    "at": row.at.isoformat() if row.at else None,
                    "tenant": row.tenant,
                    "actor": row.actor,
                    "action": row.action,
                    "target": row.target,
                    "outcome": row.outcome,
                    "source": row.source,
                    "detail": row.detail,
                }
                for row in rows
            ]
        }
    )


ROUTES = [
    issue_token,
    refresh_token,
    revoke_token,
    jwks,
    rotate_signing_key,
    list_tenants,
    create_tenant,
    create_key,
    list_keys,
    revoke_key,
    list_audit,
]
