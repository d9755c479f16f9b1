"""Pages and fragments from the templates: one base template, one list of pages (the navigation), and the
answers every route gives (a whole page, or a fragment for htmx to swap in)."""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import msgspec
from litestar import MediaType, Request, Response

from control_plane.dashboard.session import Session

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True, slots=True)
class Page:
    path: str
    label: str
    permission: tuple[str, str]
    """What the API asks of the reads the page shows: the page is listed only for roles that have it."""


NAV = (
    Page("/ui/runs", "Runs", ("runs", "read")),
    Page("/ui/workflows", "Workflows", ("workflows", "read")),
    Page("/ui/tools", "Tools", ("tools", "read")),
    Page("/ui/agents", "Agents", ("agents", "read")),
    Page("/ui/workers", "Workers and queues", ("workers", "read")),
    Page("/ui/models", "Models", ("models", "read")),
    Page("/ui/usage", "Usage", ("usage", "read")),
    Page("/ui/audit", "Audit", ("audit", "read")),
)


def _when(value: str | None) -> str:
    """An ISO time as UTC to the second, for tables."""
    if not value:
        return "—"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pretty(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["pretty"] = _pretty
    return env


_ENV = environment()


def is_fragment(request: Request[Any, Any, Any]) -> bool:
    """An htmx request that swaps part of a page (a boosted or history request wants the whole page)."""
    return request.headers.get("hx-request") == "true" and request.headers.get("hx-history-restore-request") is None


def render(template: str, **context: Any) -> str:
    return _ENV.get_template(template).render(**context)


async def page(
    session: Session, template: str, *, title: str, active: str, status: int = 200, **context: Any
) -> Response[str]:
    """A whole page: the navigation lists the pages the user's role may read."""
    nav = [item for item in NAV if await session.may(*item.permission)]
    html = render(template, title=title, active=active, nav=nav, identity=session.identity, **context)
    return Response(html, status_code=status, media_type=MediaType.HTML, cookies=session.cookies)


def fragment(
    session: Session, template: str, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> Response[str]:
    html = render(template, identity=session.identity, **context)
    return Response(html, status_code=status, media_type=MediaType.HTML, cookies=session.cookies, headers=headers)


def flash(
    session: Session,
    message: str,
    *,
    tone: str = "ok",
    details: list[str] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response[str]:
    """A message for the page's flash region (``#flash``), where every action's outcome is shown."""
    return fragment(
        session, "flash.html", status=status, headers=headers, message=message, tone=tone, details=details or []
    )
