"""Signing in (an API key exchanged for tokens through /v1/auth/token) and out (the login revoked through
/v1/auth/revoke, so that its tokens stop working wherever they were copied)."""

import logging
from typing import Annotated, Any

from litestar import MediaType, Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect

from control_plane.dashboard.rendering import render
from control_plane.dashboard.session import (
    REFRESH_COOKIE,
    Api,
    ApiRefusal,
    cleared_cookies,
    token_cookies,
    token_pair,
)
from control_plane.services import Services

log = logging.getLogger(__name__)

HOME = "/ui/runs"
Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _signin_page(error: str | None = None, status: int = 200) -> Response[str]:
    html = render("signin.html", title="Sign in", active="", nav=[], identity=None, error=error)
    return Response(html, status_code=status, media_type=MediaType.HTML)


@get("/signin")
async def signin_form() -> Response[str]:
    return _signin_page()


@post("/signin", status_code=303)
async def signin(request: Request[Any, Any, Any], data: Form) -> Response[Any]:
    """The key goes to /v1/auth/token as any client's would (so failures are braked and audited there)."""
    key = data.get("api_key", "").strip()
    if not key:
        return _signin_page("Enter an API key.", 422)
    try:
        answer = await Api(request).call("POST", "/v1/auth/token", json={"api_key": key})
    except ApiRefusal as refusal:
        return _signin_page(refusal.detail, refusal.status)
    services: Services = request.app.state.services
    cookies = token_cookies(token_pair(answer), services.settings.refresh_token_seconds)
    return Redirect(HOME, status_code=303, cookies=cookies)


@post("/signout", status_code=303)
async def signout(request: Request[Any, Any, Any]) -> Response[Any]:
    """Revoke the browser's login as any client would (its refresh token, through the API: its access tokens
    end with it), then clear its cookies."""
    refresh = request.cookies.get(REFRESH_COOKIE)
    if refresh:
        try:
            await Api(request).call("POST", "/v1/auth/revoke", json={"refresh_token": refresh})
        except ApiRefusal as refusal:  # braked or malformed: the cookies go all the same
            log.warning("signing out without revoking the login: %s", refusal.detail)
    return Redirect("/ui/signin", status_code=303, cookies=cleared_cookies())


@get("/")
async def home() -> Response[Any]:
    return Redirect(HOME)


ROUTES = [signin_form, signin, signout, home]
