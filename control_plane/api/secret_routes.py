"""Routes of the secrets store: write-only. A value is sent in ``POST /v1/secrets`` and never answered by any
route; the listing shows names and history. The master key is rotated in place (platform admins)."""

from typing import Any

import msgspec
from litestar import Request, Response, delete, get, post

from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.api.scopes import ScopeQuery, acting_in, shown_scope
from control_plane.errors import Invalid
from control_plane.security.envelope import EnvelopeError, MasterKey
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry.secrets import SecretInfo


class SecretValue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A secret to set: its name and its value (which no answer ever carries)."""

    name: str
    value: str


class Rotation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A master key rotation: ``new_key`` (base64 of 32 bytes) is needed when the control plane's key comes
    from ``AF_MASTER_KEY``; otherwise a new random key replaces the key file's."""

    new_key: str | None = None


def secret_view(info: SecretInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "scope": shown_scope(info.scope),
        "version": info.version,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
        "updated_by": info.updated_by,
    }


@post("/v1/secrets", status_code=201, opt={"permission": ("secrets", "write")})
async def set_secret(
    request: Request[Any, Any, Any],
    data: SecretValue,
    services: Services,
    identity: Identity,
    in_scope: ScopeQuery = "tenant",
) -> Response[bytes]:
    """Set a secret, or replace the one of that name (``scope=platform``: the platform's, which platform-wide
    deployments name; platform admins): created 201, updated 200. The answer never holds the value."""
    where = await acting_in(services, identity, in_scope, ("secrets", "write"))
    info = await services.secrets.put(where, data.name, data.value, actor=identity.actor)
    services.gateway.forget_credential(where, info.name)
    outcome = "created" if info.version == 1 else "updated"
    await _audit(request, services, identity, "secret.set", f"{where}/{info.name}", outcome)
    return _json({**secret_view(info), "outcome": outcome}, 201 if outcome == "created" else 200)


@get("/v1/secrets", opt={"permission": ("secrets", "read")})
async def list_secrets(services: Services, identity: Identity, in_scope: ScopeQuery = "tenant") -> Response[bytes]:
    """The tenant's secrets (``scope=platform``: the platform's): names, versions and times, never values."""
    where = await acting_in(services, identity, in_scope, ("secrets", "read"))
    return _json({"items": [secret_view(info) for info in await services.secrets.names(where)]})


@delete("/v1/secrets/{name:str}", status_code=200, opt={"permission": ("secrets", "write")})
async def delete_secret(
    request: Request[Any, Any, Any], name: str, services: Services, identity: Identity, in_scope: ScopeQuery = "tenant"
) -> Response[bytes]:
    where = await acting_in(services, identity, in_scope, ("secrets", "write"))
    await services.secrets.delete(where, name)
    services.gateway.forget_credential(where, name)
    await _audit(request, services, identity, "secret.delete", f"{where}/{name}", "deleted")
    return _json({"name": name, "deleted": True})


@post("/v1/secrets:rotate-master", status_code=200, opt={"permission": ("secrets", "rotate-master")})
async def rotate_master(
    request: Request[Any, Any, Any], services: Services, identity: Identity, data: Rotation | None = None
) -> Response[bytes]:
    """Re-wrap every secret's data key under a new master key (platform admins); the values' ciphertexts
    stay. Answers how many secrets and the old and new keys' ids, never a key."""
    successor = None
    if data is not None and data.new_key is not None:
        try:
            successor = MasterKey.from_text(data.new_key)
        except EnvelopeError as error:
            raise Invalid("validation-error", str(error), "new_key") from None
    count, old_id, new_id = await services.secrets.rotate_master(successor)
    await _audit(request, services, identity, "secret.rotate-master", f"{old_id}->{new_id}", f"{count} re-wrapped")
    return _json({"secrets": count, "previous_master_id": old_id, "master_id": new_id})


ROUTES = [set_secret, list_secrets, delete_secret, rotate_master]
