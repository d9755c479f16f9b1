"""The operators' pages: workers and queues, model deployments with their health, model usage, the audit trail.
Each reads the API as the user; what the user's role may not read is said on the page in place of it."""

from typing import Annotated, Any

from litestar import Response, get
from litestar.params import Parameter

from control_plane.dashboard.rendering import NAV, page
from control_plane.dashboard.session import ApiRefusal, Session

_TITLES = {item.path: item.label for item in NAV}
GROUPS = ("model", "day", "tier", "run", "workflow", "agent")


async def _read(session: Session, path: str, **params: Any) -> tuple[Any, ApiRefusal | None]:
    try:
        return await session.get(path, **params), None
    except ApiRefusal as refusal:
        return None, refusal


async def _page(session: Session, template: str, path: str, **context: Any) -> Response[str]:
    return await page(session, template, title=_TITLES[path], active=path, **context)


@get("/workers")
async def workers(session: Session) -> Response[str]:
    fleet, fleet_refusal = await _read(session, "/v1/workers")
    queues, queues_refusal = await _read(session, "/v1/queues")
    return await _page(
        session,
        "workers.html",
        "/ui/workers",
        workers=(fleet or {}).get("items", []),
        queues=queues,
        refusals=[r for r in (fleet_refusal, queues_refusal) if r],
    )


@get("/models")
async def models(session: Session) -> Response[str]:
    answer, refusal = await _read(session, "/v1/models")
    return await _page(session, "models.html", "/ui/models", models=answer, refusal=refusal)


@get("/usage")
async def usage(
    session: Session,
    group_by: str = "model",
    since: str | None = None,
    until: str | None = None,
) -> Response[str]:
    answer, refusal = await _read(session, "/v1/usage", group_by=group_by, since=since, until=until)
    filters = {"group_by": group_by, "since": since or "", "until": until or ""}
    return await _page(
        session, "usage.html", "/ui/usage", usage=answer, refusal=refusal, filters=filters, groups=GROUPS
    )


@get("/audit")
async def audit(session: Session, limit: Annotated[int, Parameter(ge=1, le=1000)] = 100) -> Response[str]:
    answer, refusal = await _read(session, "/v1/audit", limit=limit)
    return await _page(session, "audit.html", "/ui/audit", rows=(answer or {}).get("items", []), refusal=refusal)


ROUTES = [workers, models, usage, audit]
