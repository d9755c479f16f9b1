"""What every route answers with: JSON documents, and audit rows of what it changed."""

from typing import Any

from litestar import MediaType, Request, Response

from bus.messages import encode
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import audit


def json_response(document: Any, status: int = 200) -> Response[bytes]:
    return Response(encode(document), status_code=status, media_type=MediaType.JSON)


def source_address(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


async def record(
    request: Request[Any, Any, Any], services: Services, identity: Identity, action: str, target: str, outcome: str
) -> None:
    """An audit row of ``identity`` doing ``action`` on ``target``, with the request's source address."""
    await record_as(
        request, services, tenant=identity.tenant, actor=identity.actor, action=action, target=target, outcome=outcome
    )


async def record_as(
    request: Request[Any, Any, Any],
    services: Services,
    *,
    tenant: str,
    actor: str,
    action: str,
    target: str,
    outcome: str,
) -> None:
    """An audit row of ``actor`` (of ``tenant``) doing ``action`` on ``target``, with the request's source
    address: for callers known before, or without, an identity (a rejected key, a refused token)."""
    entry = audit.AuditEntry(
        tenant=tenant, actor=actor, action=action, target=target, outcome=outcome, source=source_address(request)
    )
    await audit.record(services.pool, entry)
