"""The web dashboard at /ui: server-rendered pages (Jinja2) made live with htmx, signed in with an API key.

Every page reads the v1 API as the signed-in user (``session``), so what a user sees and may do is what the
API's gate allows that user; buttons the role may not use are not drawn at all.
"""

from typing import Any

from litestar import MediaType, Request, Response, Router
from litestar.connection import ASGIConnection
from litestar.datastructures import ResponseHeader
from litestar.di import Provide
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from control_plane.dashboard import access, catalog, operations, run_page, runs
from control_plane.dashboard.rendering import STATIC, is_fragment, render
from control_plane.dashboard.session import ApiRefusal, Rotations, SignInFirst, open_session, same_origin

__all__ = ["router", "state"]


def state() -> dict[str, Any]:
    """What the dashboard keeps in the app's state."""
    return {"dashboard_rotations": Rotations()}


def _to_signin(request: Request[Any, Any, Any], _: SignInFirst) -> Response[Any]:
    if is_fragment(request):
        return Response("", status_code=401, headers={"HX-Redirect": "/ui/signin"})
    if request.headers.get("accept") == "text/event-stream":
        return Response("sign in first", status_code=401, media_type=MediaType.TEXT)
    return Redirect("/ui/signin", status_code=303)


def _refused(request: Request[Any, Any, Any], refusal: ApiRefusal) -> Response[str]:
    if is_fragment(request):
        html = render("flash.html", message=refusal.detail, tone="error", details=[])
    else:
        html = render("error.html", title="Refused", active="", nav=[], identity=None, refusal=refusal)
    return Response(html, status_code=refusal.status, media_type=MediaType.HTML)


def _same_origin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.scope.get("method", "GET") not in ("GET", "HEAD") and not same_origin(connection):
        raise PermissionDeniedException("a dashboard action must come from a page of this dashboard")


# Pages show what tools and models wrote (escaped by the templates); should anything slip through, the browser
# runs no script, loads nothing and frames nothing but the dashboard's own.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def router() -> Router:
    return Router(
        path="/ui",
        route_handlers=[
            *access.ROUTES,
            *runs.ROUTES,
            *run_page.ROUTES,
            *catalog.ROUTES,
            *operations.ROUTES,
            create_static_files_router(path="/static", directories=[STATIC], include_in_schema=False),
        ],
        dependencies={"session": Provide(open_session)},
        exception_handlers={SignInFirst: _to_signin, ApiRefusal: _refused},
        guards=[_same_origin],
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
            ResponseHeader(name="Referrer-Policy", value="same-origin"),
        ],
        include_in_schema=False,
    )
