"""What every route answers with: JSON documents, and audit rows of what it changed."""

from typing import Any

import msgspec
from litestar import MediaType, Request, Response

from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import audit

_encode = msgspec.json.Encoder().encode


def json_response(document: Any, status: int = 200) -> Response[bytes]:
    return Response(_encode(document), status_code=status, media_type=MediaType.JSON)


def source_address(request: Request[Any, Any, Any]) -> str | None:
    return request.client.host if request.client else None


async def record(
    request: Request[Any, Any, Any], services: Services, identity: Identity, action: str, target: str, outcome: str
) -> None:
    """An audit row of ``identity`` doing ``action`` on ``target``, with the request's source address."""
    entry = audit.AuditEntry(identity.tenant, identity.actor, action, target, outcome, source_address(request))
    await audit.record(services.pool, entry)
