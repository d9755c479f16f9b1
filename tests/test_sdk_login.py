"""The SDK's stored login and its new errors against httpx.MockTransport: an expired or refused access token
is refreshed once and the new pair stored; 403 and 429 problems map to Forbidden and RateLimited."""

import json
import stat
import time
from pathlib import Path

import httpx
import pytest
from agentflow import AsyncClient, Client, Forbidden, RateLimited, StaleLogin, Unauthorized
from agentflow._login import Login, TokenAuth, load_login, save_login

API = "http://af.test"


def _pair(n: int) -> dict[str, object]:
    return {"access_token": f"access-{n}", "refresh_token": f"afr_{n}", "expires_in": 900, "token_type": "Bearer"}


class FakeApi:
    """Answers /v1/tools for one access token only and rotates refresh tokens like the server."""

    def __init__(self, valid: str) -> None:
        self.valid = valid
        self.issued = 0
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/refresh":
            self.issued += 1
            self.seen.append(f"refresh {json.loads(request.content)['refresh_token']}")
            self.valid = f"access-{self.issued}"
            return httpx.Response(200, json=_pair(self.issued))
        self.seen.append(request.headers["Authorization"])
        if request.headers["Authorization"] != f"Bearer {self.valid}":
            return httpx.Response(401, json={"type": "urn:agentflow:problem:unauthorized", "detail": "expired"})
        return httpx.Response(200, json={"items": []})


@pytest.fixture
def stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("AF_TOKEN", raising=False)
    return tmp_path / "agentflow" / "login.json"


def test_a_login_is_stored_per_api_readable_by_the_user_alone(stored: Path) -> None:
    save_login(Login(API, "a", "r", 1.0))
    save_login(Login("http://other", "b", "s", 2.0))
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert load_login(API) == Login(API, "a", "r", 1.0)
    assert load_login("http://other") == Login("http://other", "b", "s", 2.0)
    assert load_login("http://nowhere") is None


def test_an_expired_access_token_is_refreshed_before_the_request(stored: Path) -> None:
    save_login(Login(API, "access-0", "afr_0", time.time() - 1))
    api = FakeApi("access-0")
    with Client(API, transport=httpx.MockTransport(api)) as af:
        assert af.list_tools() == []
    assert api.seen == ["refresh afr_0", "Bearer access-1"]
    login = load_login(API)
    assert login is not None and login.refresh_token == "afr_1"


def test_a_refused_access_token_is_refreshed_once_and_the_request_sent_again(stored: Path) -> None:
    save_login(Login(API, "access-old", "afr_0", time.time() + 600))
    api = FakeApi("access-0")
    with Client(API, transport=httpx.MockTransport(api)) as af:
        assert af.list_tools() == []
    assert api.seen == ["Bearer access-old", "refresh afr_0", "Bearer access-1"]


async def test_the_async_client_refreshes_too(stored: Path) -> None:
    save_login(Login(API, "access-0", "afr_0", time.time() - 1))
    api = FakeApi("access-0")
    async with AsyncClient(API, transport=httpx.MockTransport(api)) as af:
        assert await af.list_tools() == []
    assert api.seen == ["refresh afr_0", "Bearer access-1"]


def test_a_refused_refresh_raises_unauthorized_saying_how_to_log_in_again(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"type": "urn:agentflow:problem:unauthorized", "detail": "revoked"})

    auth = TokenAuth(Login(API, "a", "afr_0", 0.0), tmp_path / "login.json")
    with httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as http, pytest.raises(Unauthorized) as caught:
        http.get(f"{API}/v1/tools")
    assert isinstance(caught.value, StaleLogin)
    assert str(caught.value) == (
        f"the login stored for {API} is no longer valid (revoked): log in again with `af login`,"
        " or forget it with `af logout`"
    )


def test_a_token_given_explicitly_wins_over_the_stored_login(stored: Path) -> None:
    save_login(Login(API, "access-0", "afr_0", time.time() + 600))
    with Client(API, "af_key_secret") as af:
        assert af.settings.token == "af_key_secret"


@pytest.mark.parametrize(
    ("status", "slug", "error"),
    [(403, "forbidden", Forbidden), (429, "rate-limited", RateLimited), (429, "quota-exceeded", RateLimited)],
)
def test_refusals_and_limits_map_to_their_errors(status: int, slug: str, error: type[Exception]) -> None:
    answer = httpx.Response(
        status,
        json={"type": f"urn:agentflow:problem:{slug}", "title": "t", "status": status, "detail": "no"},
        headers={"Retry-After": "7"},
    )
    with Client(API, "k", transport=httpx.MockTransport(lambda request: answer)) as af, pytest.raises(error) as caught:
        af.list_tools()
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after == 7


def test_logging_in_again_to_the_local_stack_uses_its_admin_key_not_the_stored_login(
    stored: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "stack.json").write_text(json.dumps({"api_url": API}))
    (home / "admin.key").write_text("af_local_admin\n")
    monkeypatch.setenv("AF_HOME", str(home))
    monkeypatch.delenv("AF_API_URL", raising=False)
    save_login(Login(API, "access-0", "afr_0", time.time() + 600))
    exchanged: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        exchanged.append(json.loads(request.content)["api_key"])
        return httpx.Response(200, json=_pair(5))

    with Client(transport=httpx.MockTransport(handler)) as af:
        assert af.settings.login is not None
        af.login()
    assert exchanged == ["af_local_admin"]
    login = load_login(API)
    assert login is not None and login.access_token == "access-5"
