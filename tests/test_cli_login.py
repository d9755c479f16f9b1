"""`af login` and `af tenants` as a user runs them against the real stack, and the SDK's use of the stored
login: the access token is sent, and refreshed once it has expired."""

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from agentflow import Client, Forbidden

from tests.conftest import ROOT, Embedded, Stack

AF = Path(sys.executable).parent / "af"
Af = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("AF_TOKEN", raising=False)
    return tmp_path / "config"


@pytest.fixture
def af(stack: Stack, config_home: Path, tmp_path: Path) -> Af:
    """`af ARGS...` with no AF_TOKEN and a config dir of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    env.update(AF_HOME=str(tmp_path / "home"), AF_API_URL=stack.api_url, XDG_CONFIG_HOME=str(config_home))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(AF), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)

    return run


def test_af_login_stores_tokens_readable_by_the_user_alone_and_later_commands_use_them(
    af: Af, stack: Stack, config_home: Path
) -> None:
    assert af("tool", "ls").returncode != 0  # no token at all yet
    done = af("login", "--api-key", stack.token)
    assert done.returncode == 0, done.stderr
    stored = config_home / "agentflow" / "login.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    login = json.loads(stored.read_text())[stack.api_url]
    assert login["access_token"].count(".") == 2 and login["refresh_token"].startswith("afr_")
    assert af("login").returncode != 0  # logged in, but no key to log in again with
    assert af("--token", stack.token, "login").returncode == 0
    listed = af("tenants", "ls", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert "default" in [t["name"] for t in json.loads(listed.stdout)["items"]]


def test_the_sdk_refreshes_an_expired_stored_access_token(stack: Stack, config_home: Path) -> None:
    with Client(api_url=stack.api_url, token=stack.token) as admin:
        admin.login()
    stored = config_home / "agentflow" / "login.json"
    logins = json.loads(stored.read_text())
    logins[stack.api_url]["expires_at"] = time.time() - 1
    stored.write_text(json.dumps(logins))
    before = logins[stack.api_url]
    with Client(api_url=stack.api_url) as client:
        assert client.settings.token is None and client.settings.login is not None
        assert isinstance(client.list_tools(), list)
    after = json.loads(stored.read_text())[stack.api_url]
    assert after["refresh_token"] != before["refresh_token"] and after["expires_at"] > time.time() + 800
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600


def test_af_tenants_create_shows_the_first_admin_key_once_and_refuses_bad_names(af: Af, stack: Stack) -> None:
    assert af("login", "--api-key", stack.token).returncode == 0
    name = f"cli-{os.getpid()}-{time.monotonic_ns() % 100000}"
    created = af("tenants", "create", name, "--max-concurrent-runs", "5", "--output", "json")
    assert created.returncode == 0, created.stderr
    tenant = json.loads(created.stdout)
    assert tenant["name"] == name and tenant["max_concurrent_runs"] == 5
    assert tenant["admin_key"]["role"] == "tenant-admin" and tenant["admin_key"]["key"].startswith("af_")
    bad = af("tenants", "create", "no.dots")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("af: ") and bad.stderr.count("\n") == 1 and "(field: name)" in bad.stderr
    key = af("tenants", "add-key", name, "--role", "viewer", "--output", "json")
    assert key.returncode == 0, key.stderr
    with (
        Client(api_url=stack.api_url, token=json.loads(key.stdout)["key"]) as viewer,
        pytest.raises(Forbidden, match=f"role viewer lacks tools:write in tenant {name}"),
    ):
        viewer.register_tool({"name": "x", "version": "1.0.0", "runtime": {"command": ["true"]}})


def test_a_refused_stored_login_says_how_to_log_in_again_and_af_logout_forgets_it(
    af: Af, stack: Stack, config_home: Path
) -> None:
    assert af("login", "--api-key", stack.token).returncode == 0
    stored = config_home / "agentflow" / "login.json"
    logins = json.loads(stored.read_text())
    logins[stack.api_url] |= {"expires_at": time.time() - 1, "refresh_token": "afr_of_a_stack_long_gone"}
    stored.write_text(json.dumps(logins))

    refused = af("tool", "ls")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (
        f"af: the login stored for {stack.api_url} is no longer valid (the refresh token is not valid):"
        " log in again with `af login`, or forget it with `af logout`\n"
    )
    out = af("logout")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"logged out of {stack.api_url}; its tokens removed from {stored}\n"
    assert stack.api_url not in json.loads(stored.read_text())
    assert af("logout").stdout == f"no login was stored for {stack.api_url}\n"


def test_af_logout_revokes_the_login_so_that_its_tokens_no_longer_work_anywhere(
    af: Af, stack: Stack, config_home: Path
) -> None:
    assert af("login", "--api-key", stack.token).returncode == 0
    stored = config_home / "agentflow" / "login.json"
    login = json.loads(stored.read_text())[stack.api_url]
    bearer = {"Authorization": f"Bearer {login['access_token']}"}
    assert httpx.get(f"{stack.api_url}/v1/tools", headers=bearer, timeout=30).status_code == 200

    out = af("logout")
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"logged out of {stack.api_url}: its login revoked, its tokens removed from {stored}\n"
    assert stack.api_url not in json.loads(stored.read_text())
    # A copy of the tokens is worth nothing now: the refresh token is refused, and so is the access token.
    # (From an address of its own: a refused refresh counts against its source, as a guess would.)
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.31"), timeout=30) as copy:
        refused = copy.post(f"{stack.api_url}/v1/auth/refresh", json={"refresh_token": login["refresh_token"]})
        assert refused.status_code == 401 and "revoked" in refused.json()["detail"], refused.text
        assert copy.get(f"{stack.api_url}/v1/tools", headers=bearer).status_code == 401
    with Client(api_url=stack.api_url, token=stack.token) as client:
        assert client.revoke_login(login["refresh_token"]).revoked is False  # revoked already


def test_a_login_of_an_earlier_local_stack_on_the_same_url_gives_way_to_the_new_stacks_key(
    embedded: Embedded, config_home: Path
) -> None:
    stored = config_home / "agentflow" / "login.json"
    embedded.env["XDG_CONFIG_HOME"] = str(config_home)
    assert embedded("up", "--workers", "0", "--detach").returncode == 0
    url, first_id = embedded.state["api_url"], embedded.state["stack_id"]
    login = embedded.af("login")
    assert login.returncode == 0, login.stderr
    assert json.loads(stored.read_text())[url]["stack_id"] == first_id
    assert embedded.af("tool", "ls").returncode == 0
    assert embedded("down").returncode == 0

    # A new stack in another AF_HOME, on the same port: its database knows none of the first one's tokens.
    second = Embedded(
        embedded.home.parent / "second", AF_PORT=embedded.env["AF_PORT"], XDG_CONFIG_HOME=str(config_home)
    )
    try:
        up = second("up", "--workers", "0", "--detach")
        assert up.returncode == 0, up.stderr
        assert second.state["api_url"] == url and second.state["stack_id"] not in ("", first_id)
        listed = second.af("tool", "ls", "--output", "json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["items"] is not None
        assert listed.stderr == (
            f"af: forgot the login stored for {url}: an earlier stack issued it; using this stack's key"
            " (af login logs in to this one)\n"
        )
        assert url not in json.loads(stored.read_text())
        assert second.af("tool", "ls").stderr == ""

        assert second.af("login").returncode == 0
        assert json.loads(stored.read_text())[url]["stack_id"] == second.state["stack_id"]
        assert second.af("tool", "ls").returncode == 0
    finally:
        second.stop_all()
