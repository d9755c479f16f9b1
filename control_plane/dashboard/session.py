"""A signed-in browser: its tokens in HttpOnly cookies, and the API called in process on its behalf.

The dashboard is a client of the v1 API like any other: every read and every action is a /v1 request carrying
the user's access token, through the same gate (authentication, rate, RBAC) and the same audit trail. The
requests go to the app in process (httpx's ASGI transport), with the browser's address as their source.

Access tokens live minutes and are refreshed with the refresh token when they run out. A refresh token is used
once, and a second use revokes its whole login, so the pages and fragments a browser loads at the same moment
share one rotation: its outcome is remembered for a short while by the digest of the token it used.
"""

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import httpx
import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie

from control_plane.api.answers import source_address
from control_plane.errors import Forbidden, Refused
from control_plane.security.identity import Identity
from control_plane.services import Services

ACCESS_COOKIE = "af_ui_access"
REFRESH_COOKIE = "af_ui_refresh"
COOKIE_PATH = "/ui"
_ROTATION_SECONDS = 30.0
_INTERNAL_BASE = "http://control-plane"


class SignInFirst(Exception):
    """The browser is not signed in (or its login ended): it is sent to the sign-in page."""


@dataclass(frozen=True, slots=True)
class ApiRefusal(Exception):
    """The API refused a request of the dashboard; its problem, to show to the user."""

    status: int
    kind: str
    detail: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int


def token_cookies(pair: TokenPair, refresh_seconds: int) -> list[Cookie]:
    """The cookies that keep a login: HttpOnly (no script reads them), SameSite=Strict (no other site sends them)."""
    common: dict[str, Any] = {"path": COOKIE_PATH, "httponly": True, "samesite": "strict", "secure": False}
    return [
        Cookie(key=ACCESS_COOKIE, value=pair.access_token, max_age=pair.expires_in, **common),
        Cookie(key=REFRESH_COOKIE, value=pair.refresh_token, max_age=refresh_seconds, **common),
    ]


def cleared_cookies() -> list[Cookie]:
    return [
        Cookie(key=name, value="", max_age=0, path=COOKIE_PATH, httponly=True, samesite="strict")
        for name in (ACCESS_COOKIE, REFRESH_COOKIE)
    ]


def token_pair(document: Any) -> TokenPair:
    return TokenPair(document["access_token"], document["refresh_token"], int(document["expires_in"]))


@dataclass
class Rotations:
    """Refreshes shared by the requests of one browser that carry the same refresh token at once."""

    _done: dict[bytes, tuple[float, TokenPair]] = field(default_factory=dict)
    _locks: dict[bytes, asyncio.Lock] = field(default_factory=dict)

    async def refresh(self, api: "Api", refresh_token: str) -> TokenPair:
        digest = hashlib.sha256(refresh_token.encode()).digest()
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            for stale in [d for d, (at, _) in self._done.items() if at < now]:
                del self._done[stale]
            remembered = self._done.get(digest)
            if remembered is not None:
                return remembered[1]
            try:
                pair = token_pair(await api.call("POST", "/v1/auth/refresh", json={"refresh_token": refresh_token}))
            finally:
                self._locks.pop(digest, None)
            self._done[digest] = (now + _ROTATION_SECONDS, pair)
            return pair


class Api:
    """The v1 API, called in process as ``request``'s browser (its address is the requests' source)."""

    def __init__(self, request: Request[Any, Any, Any], access_token: str | None = None) -> None:
        self._request = request
        self.access_token = access_token

    async def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """The decoded answer of a 2xx; an ``ApiRefusal`` with the problem of anything else."""
        transport = httpx.ASGITransport(
            app=cast(Any, self._request.app), client=(source_address(self._request) or "-", 0)
        )
        headers = {"Authorization": f"Bearer {self.access_token}"} if self.access_token else {}
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        async with httpx.AsyncClient(transport=transport, base_url=_INTERNAL_BASE) as client:
            answer = await client.request(method, path, json=json, params=query, headers=headers)
        body = msgspec.json.decode(answer.content) if answer.content else None
        if answer.status_code >= 400:
            problem = body if isinstance(body, dict) else {}
            kind = str(problem.get("type", "")).rsplit(":", 1)[-1] or "error"
            raise ApiRefusal(
                answer.status_code, kind, str(problem.get("detail", answer.reason_phrase)), problem.get("field")
            )
        return body


@dataclass
class Session:
    """One request of a signed-in browser: who it is, the API as that user, and cookies to renew."""

    identity: Identity
    api: Api
    services: Services
    cookies: list[Cookie] = field(default_factory=list)

    async def get(self, path: str, **params: Any) -> Any:
        return await self.api.call("GET", path, params=params)

    async def post(self, path: str, document: Any = None) -> Any:
        return await self.api.call("POST", path, json=document if document is not None else {})

    async def may(self, obj: str, act: str) -> bool:
        """Whether this user's role allows ``act`` on ``obj`` in its tenant: what the API's gate will decide."""
        try:
            await self.services.authorizer.require(self.identity, self.identity.tenant, obj, act)
        except Forbidden:
            return False
        return True


async def open_session(request: Request[Any, Any, Any]) -> Session:
    """The session of a dashboard request, its access token refreshed when it has run out; else SignInFirst."""
    services: Services = request.app.state.services
    rotations: Rotations = request.app.state.dashboard_rotations
    access, refresh = request.cookies.get(ACCESS_COOKIE), request.cookies.get(REFRESH_COOKIE)
    if access:
        try:
            identity, _ = await services.auth.identify(f"Bearer {access}")
            return Session(identity, Api(request, access), services)
        except Refused:
            pass
    if not refresh:
        raise SignInFirst
    try:
        pair = await rotations.refresh(Api(request), refresh)
        identity, _ = await services.auth.identify(f"Bearer {pair.access_token}")
    except (ApiRefusal, Refused):
        raise SignInFirst from None
    cookies = token_cookies(pair, services.settings.refresh_token_seconds)
    return Session(identity, Api(request, pair.access_token), services, cookies)


def same_origin(request: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """A state-changing request comes from a page of this dashboard: its Origin, when sent, is this host.
    (The SameSite=Strict cookies already keep other sites' requests unauthenticated; this refuses them early.)"""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")
