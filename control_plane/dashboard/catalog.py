"""The catalog's pages: workflows, tools and agents, each name's versions and any version's document (a
workflow's drawn as its graph too)."""

from typing import Any

import yaml
from litestar import Request, Response, get

from control_plane.dashboard import graph
from control_plane.dashboard.rendering import NAV, page
from control_plane.dashboard.session import ApiRefusal, Session

KINDS = {"workflows": "workflow", "tools": "tool", "agents": "agent"}
_TITLES = {item.path: item.label for item in NAV}


def _kind(request: Request[Any, Any, Any]) -> str:
    return request.url.path.split("/")[2]


def _document_text(spec: Any) -> str:
    """A document as its author would write it (YAML, keys in their order)."""
    return str(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))


@get(["/workflows", "/tools", "/agents"])
async def catalog_list(request: Request[Any, Any, Any], session: Session) -> Response[str]:
    kind = _kind(request)
    path = f"/ui/{kind}"
    try:
        entries, refusal = (await session.get(f"/v1/{kind}"))["items"], None
    except ApiRefusal as refused:
        entries, refusal = [], refused
    return await page(
        session, "catalog.html", title=_TITLES[path], active=path, kind=kind, entries=entries, refusal=refusal
    )


@get(["/workflows/{name:str}", "/tools/{name:str}", "/agents/{name:str}"])
async def catalog_entry(
    request: Request[Any, Any, Any], name: str, session: Session, version: str | None = None
) -> Response[str]:
    kind = _kind(request)
    versions = (await session.get(f"/v1/{kind}/{name}/versions"))["items"]
    chosen = next((v for v in versions if v["version"] == version), versions[0])
    spec = chosen["spec"]
    drawn = graph.layout(spec, [], "pending") if kind == "workflows" else None
    return await page(
        session,
        "catalog_entry.html",
        title=f"{KINDS[kind].capitalize()} {name}",
        active=f"/ui/{kind}",
        kind=kind,
        name=name,
        versions=versions,
        chosen=chosen,
        document=_document_text(spec),
        graph=drawn,
    )


ROUTES = [catalog_list, catalog_entry]
