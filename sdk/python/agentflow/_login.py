"""A stored login: the access and refresh tokens that `af login` got for an API, kept per API URL in the
user's config directory (file mode 0600) with the id of the stack that issued them, and the httpx `Auth` that
sends the access token and refreshes it when it has expired (or the API says so)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncGenerator, Generator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from ._errors import FileError, StaleLogin, Unauthorized, raise_for_problem
from .models import Tokens, decode_as

_EARLY_SECONDS = 30.0
"""Refresh this long before the access token expires, so that it does not expire in flight."""


def login_file() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "agentflow" / "login.json"


@dataclass
class Login:
    api_url: str
    access_token: str
    refresh_token: str
    expires_at: float
    """Unix time at which the access token expires."""
    stack_id: str = ""
    """The installation that issued the tokens (the API's `stack_id`); another one at the same URL, such as
    a new local stack on 127.0.0.1:8080, does not know them."""

    @classmethod
    def from_answer(cls, api_url: str, answer: Tokens) -> Login:
        expires_at = time.time() + answer.expires_in
        return cls(api_url, answer.access_token, answer.refresh_token, expires_at, answer.stack_id)

    def expired(self) -> bool:
        return time.time() >= self.expires_at - _EARLY_SECONDS


def _read(path: Path) -> dict[str, Any]:
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise FileError(f"cannot read the stored login {path}: {exc}") from exc
    return stored if isinstance(stored, dict) else {}


def load_login(api_url: str, path: Path | None = None) -> Login | None:
    entry = _read(path or login_file()).get(api_url)
    try:
        return Login(**entry) if isinstance(entry, dict) else None
    except TypeError:
        return None


def save_login(login: Login, path: Path | None = None) -> Path:
    """Store ``login`` beside the logins of other APIs, readable by the user alone."""
    path = path or login_file()
    stored = _read(path)
    stored[login.api_url] = asdict(login)
    _write(path, stored)
    return path


def forget_login(api_url: str, path: Path | None = None) -> bool:
    """Remove the login stored for ``api_url``; False if there was none."""
    path = path or login_file()
    stored = _read(path)
    if stored.pop(api_url, None) is None:
        return False
    _write(path, stored)
    return True


def _write(path: Path, stored: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(stored, file, indent=2)
    os.chmod(temporary, 0o600)
    temporary.replace(path)


class TokenAuth(httpx.Auth):
    """Bearer the stored access token; refresh it (once per request) when expired or refused, and store the
    new pair. Works under both httpx clients: the refresh is a request this flow yields."""

    def __init__(self, login: Login, path: Path | None = None) -> None:
        self.login = login
        self._path = path

    def _refresh_request(self) -> httpx.Request:
        return httpx.Request(
            "POST", f"{self.login.api_url}/v1/auth/refresh", json={"refresh_token": self.login.refresh_token}
        )

    def _refreshed(self, response: httpx.Response) -> None:
        try:
            raise_for_problem(response)
        except Unauthorized as refused:
            raise StaleLogin(self.login.api_url, refused) from refused
        self.login = Login.from_answer(self.login.api_url, decode_as(Tokens, response.content, "the refreshed tokens"))
        save_login(self.login, self._path)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        refreshed = False
        if self.login.expired():
            self._refreshed((yield self._refresh_request()))
            refreshed = True
        request.headers["Authorization"] = f"Bearer {self.login.access_token}"
        response = yield request
        if response.status_code == 401 and not refreshed:
            self._refreshed((yield self._refresh_request()))
            request.headers["Authorization"] = f"Bearer {self.login.access_token}"
            yield request

    # Only the refresh answers are read here: the others may be event streams, read by the caller.
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self.auth_flow(request)
        sent = next(flow)
        while True:
            response = yield sent
            if sent.url.path.endswith("/v1/auth/refresh"):
                response.read()
            try:
                sent = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self.auth_flow(request)
        sent = next(flow)
        while True:
            response = yield sent
            if sent.url.path.endswith("/v1/auth/refresh"):
                await response.aread()
            try:
                sent = flow.send(response)
            except StopIteration:
                return
