"""The secrets store against the real stack: secrets set, replaced, listed and deleted through the API and
``af secret``, write-only (no answer carries a value), scoped per tenant, sealed at rest, audited, revealed to
the model gateway as a deployment's key (the loopback upstream checks it), and found nowhere else: not in a
``pg_dump``, the logs, a run's events or any answer. The master key: rotated in place with every secret still
readable, and a control plane with another key refuses to start with one line."""

import asyncio
import base64
import functools
import json
import os
import pty
import secrets
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow import Client, document
from agentflow.cli import cli
from click.testing import CliRunner, Result

from control_plane.errors import NotFound
from control_plane.gateway import CallContext, Gateway
from control_plane.security import master_key
from control_plane.security.envelope import EnvelopeError, MasterKey
from control_plane.security.secrets import SecretStore
from control_plane.settings import SettingsError
from control_plane.settings import load as load_settings
from control_plane.stack.postgres import PostgresServer, bin_path
from registry import connect as connect_db
from registry import migrate
from registry import secrets as stored
from registry.db import dsn_with_database, ensure_database
from tests.conftest import Stack, Upstream, isolated_stack
from tests.conftest import expect_problem as _problem


class Answers:
    """An API client of one key that keeps every answer's body, so that a test can search them all."""

    def __init__(self, stack: Stack, key: str, url: str | None = None) -> None:
        self.bodies: list[bytes] = []
        self.http = httpx.Client(
            base_url=url or stack.api_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
            event_hooks={"response": [self._keep]},
        )

    def _keep(self, response: httpx.Response) -> None:
        self.bodies.append(response.read())

    def holds(self, value: str) -> bool:
        return any(value.encode() in body for body in self.bodies)


def _new_tenant(stack: Stack, prefix: str) -> tuple[str, str]:
    name = f"{prefix}-{secrets.token_hex(3)}"
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}) as admin:
        made = admin.post("/v1/tenants", json={"name": name})
        assert made.status_code == 201, made.text
        return name, made.json()["admin_key"]["key"]


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> tuple[str, str]:
    return _new_tenant(stack, "sec")


@pytest.fixture
def api(stack: Stack, tenant: tuple[str, str]) -> Iterator[Answers]:
    answers = Answers(stack, tenant[1])
    with answers.http:
        yield answers


MADE: list[str] = []
"""Every value this module's tests have set: the search at the end looks for all of them."""


def _value() -> str:
    MADE.append(f"sk-test-{secrets.token_hex(16)}")
    return MADE[-1]


def _audit(api: Answers, action: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.http.get("/v1/audit", params={"limit": 200}).json()["items"]
    return [item for item in items if item["action"] == action]


def test_a_secret_is_set_replaced_listed_and_deleted_and_no_answer_holds_its_value(api: Answers) -> None:
    first, second = _value(), _value()
    made = api.http.post("/v1/secrets", json={"name": "openai-key", "value": first})
    assert made.status_code == 201, made.text
    assert made.json()["outcome"] == "created" and made.json()["version"] == 1
    replaced = api.http.post("/v1/secrets", json={"name": "openai-key", "value": second})
    assert replaced.status_code == 200 and replaced.json()["outcome"] == "updated" and replaced.json()["version"] == 2
    (item,) = [i for i in api.http.get("/v1/secrets").json()["items"] if i["name"] == "openai-key"]
    assert set(item) == {"name", "scope", "version", "created_at", "updated_at", "updated_by"}
    assert item["version"] == 2 and item["scope"] == "tenant" and item["updated_by"].startswith("key:")
    assert api.http.delete("/v1/secrets/openai-key").json() == {"name": "openai-key", "deleted": True}
    assert "openai-key" not in [i["name"] for i in api.http.get("/v1/secrets").json()["items"]]
    _problem(api.http.delete("/v1/secrets/openai-key"), 404, "secret-not-found", "name")
    outcomes = [(row["target"].split("/")[-1], row["outcome"]) for row in _audit(api, "secret.set")]
    assert outcomes[:2] == [("openai-key", "updated"), ("openai-key", "created")]
    assert _audit(api, "secret.delete")[0]["outcome"] == "deleted"
    assert not api.holds(first) and not api.holds(second)


def test_a_secret_is_checked_at_the_edge_and_the_problem_never_repeats_its_value(api: Answers) -> None:
    value = _value()
    _problem(api.http.post("/v1/secrets", json={"name": "Bad Name", "value": value}), 422, "invalid-name", "name")
    _problem(api.http.post("/v1/secrets", json={"name": "empty", "value": ""}), 422, "validation-error", "value")
    _problem(api.http.post("/v1/secrets", json={"name": "n", "value": 5}), 422, "validation-error", "value")
    answer = api.http.post("/v1/secrets", json={"name": "n", "value": value, "colour": "red"})
    _problem(answer, 422, "validation-error", "colour")
    _problem(api.http.post("/v1/secrets", json={"name": "n"}), 422, "validation-error", "value")
    big = api.http.post("/v1/secrets", json={"name": "big", "value": "x" * (64 * 1024 + 1)})
    _problem(big, 422, "validation-error", "value")
    assert not api.holds(value)


def test_a_viewer_lists_secrets_but_cannot_set_or_delete_them(stack: Stack, tenant: tuple[str, str]) -> None:
    with Client(api_url=stack.api_url, token=tenant[1]) as admin:
        admin.set_secret("seen-by-viewer", _value())
        viewer_key = admin.create_key(tenant[0], "viewer")["key"]
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {viewer_key}"}) as viewer:
        assert "seen-by-viewer" in [i["name"] for i in viewer.get("/v1/secrets").json()["items"]]
        _problem(viewer.post("/v1/secrets", json={"name": "x", "value": "y"}), 403, "forbidden")
        _problem(viewer.delete("/v1/secrets/seen-by-viewer"), 403, "forbidden")


# --- af secret -------------------------------------------------------------------------------------


def _af(stack: Stack, key: str, args: list[str], stdin: str | None = None) -> Result:
    def factory(url: str | None, token: str | None) -> Client:
        return Client(api_url=stack.api_url, token=key)

    return CliRunner(env={"COLUMNS": "200"}).invoke(cli, args, input=stdin, obj=factory)


def test_af_secret_sets_from_stdin_or_a_file_lists_and_removes_and_never_takes_a_value_from_argv(
    stack: Stack, tenant: tuple[str, str], tmp_path: Path
) -> None:
    key, value, from_file = tenant[1], _value(), _value()
    made = _af(stack, key, ["secret", "set", "cli-key"], stdin=value + "\n")
    assert made.exit_code == 0, made.output
    assert made.output.strip() == "secret cli-key created (version 1)"
    (tmp_path / "key.txt").write_text(from_file + "\n")
    again = _af(stack, key, ["secret", "set", "cli-key", "--from-file", str(tmp_path / "key.txt")])
    assert again.output.strip() == "secret cli-key updated (version 2)", again.output
    refused = _af(stack, key, ["secret", "set", "cli-key", value])
    assert refused.exit_code == 2 and "unexpected extra argument" in refused.output.lower(), refused.output
    empty = _af(stack, key, ["secret", "set", "cli-empty"], stdin="\n")
    assert empty.exit_code == 1 and empty.output.strip() == "af: the secret's value is empty"
    table = _af(stack, key, ["secret", "ls"])
    (line,) = [row for row in table.output.splitlines() if row.startswith("cli-key ")]
    assert " tenant " in line and " 2 " in line
    listed = json.loads(_af(stack, key, ["secret", "ls", "-o", "json"]).output)
    assert "cli-key" in [item["name"] for item in listed["items"]]
    assert _af(stack, key, ["secret", "rm", "cli-key"]).output.strip() == "secret cli-key deleted"
    missing = _af(stack, key, ["secret", "rm", "cli-key"])
    assert missing.exit_code == 1 and len(missing.output.strip().splitlines()) == 1 and "no secret" in missing.output
    every = made.output + again.output + table.output + json.dumps(listed)
    assert value not in every and from_file not in every


def test_af_secret_set_on_a_terminal_prompts_twice_without_echoing_the_value(
    stack: Stack, tenant: tuple[str, str], tmp_path: Path
) -> None:
    value = _value()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    env.update(AF_HOME=str(tmp_path), AF_API_URL=stack.api_url, AF_TOKEN=tenant[1], NO_COLOR="1")
    controller, terminal = pty.openpty()
    argv = [sys.executable, "-m", "agentflow.cli", "secret", "set", "typed-key"]
    process = subprocess.Popen(argv, stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    seen = b""
    try:
        for prompt in (b"Value: ", b"Repeat for confirmation: "):
            seen += _read_until(controller, prompt)
            os.write(controller, value.encode() + b"\n")
        seen += _read_until(controller, b"(version 1)")
        assert process.wait(timeout=30) == 0
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait()
    assert b"secret typed-key created (version 1)" in seen and value.encode() not in seen, seen


def _read_until(fd: int, wanted: bytes) -> bytes:
    """What the terminal shows until ``wanted`` (AssertionError after 30 s)."""
    got, deadline = b"", time.monotonic() + 30
    while wanted not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{wanted!r} not shown; the terminal showed {got!r}"
        if select.select([fd], [], [], left)[0]:
            got += os.read(fd, 1024)
    return got


# --- the gateway uses secrets ----------------------------------------------------------------------


def _deploy(api: Answers, upstream: Upstream, name: str, credential: str) -> None:
    document = {
        "name": name,
        "provider": "openai",
        "endpoint": upstream.url(name),
        "model": f"remote-{name}",
        "credential": credential,
    }
    answer = api.http.post("/v1/models", json=document)
    assert answer.status_code in (200, 201), answer.text


def _chat(api: Answers, model: str) -> httpx.Response:
    return api.http.post(
        "/v1/llm/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
    )


def test_a_deployment_calls_its_upstream_with_its_secret_as_the_bearer_token(
    api: Answers, upstream: Upstream, tenant: tuple[str, str]
) -> None:
    value = _value()
    upstream.require_key("up-keyed", value)
    api.http.post("/v1/secrets", json={"name": "upstream-key", "value": value}).raise_for_status()
    _deploy(api, upstream, "up-keyed", "upstream-key")
    answer = _chat(api, "up-keyed")
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert upstream.seen("up-keyed")["headers"]["authorization"] == f"Bearer {value}"
    (reveal, *_) = _audit(api, "secret.reveal")
    assert reveal["target"] == "upstream-key" and reveal["outcome"] == "revealed"
    assert reveal["detail"] == "model gateway: deployment up-keyed" and reveal["actor"] == "control-plane"
    assert not api.holds(value)


def test_a_wrong_key_quoted_back_by_the_provider_is_cut_from_the_failure_and_a_replaced_key_serves_at_once(
    api: Answers, upstream: Upstream
) -> None:
    wrong, right = _value(), _value()
    upstream.require_key("up-wrong-key", right)
    api.http.post("/v1/secrets", json={"name": "wrong-key", "value": wrong}).raise_for_status()
    _deploy(api, upstream, "up-wrong-key", "wrong-key")
    problem = _problem(_chat(api, "up-wrong-key"), 503, "no-healthy-deployment", "model")
    assert "auth (HTTP 401): Incorrect API key provided: [redacted]" in problem["detail"], problem
    assert upstream.seen("up-wrong-key")["headers"]["authorization"] == f"Bearer {wrong}"
    deadline = time.monotonic() + 10  # calls are recorded a moment after their answer
    while not (found := [c for c in api.http.get("/v1/llm/calls").json()["items"] if c["requested"] == "up-wrong-key"]):
        assert time.monotonic() < deadline, "the failed call was not recorded"
        time.sleep(0.05)
    assert found[0]["outcome"] != "ok" and "[redacted]" in json.dumps(found[0])
    # Replaced through this control plane, the key is used at once (not a minute later).
    api.http.post("/v1/secrets", json={"name": "wrong-key", "value": right}).raise_for_status()
    assert _chat(api, "up-wrong-key").status_code == 200
    assert not api.holds(wrong) and not api.holds(right)


def test_a_deployment_whose_secret_is_missing_fails_as_secret_not_found(api: Answers, upstream: Upstream) -> None:
    _deploy(api, upstream, "up-unkeyed", "no-such-secret")
    problem = _problem(_chat(api, "up-unkeyed"), 404, "secret-not-found", "model")
    assert "no secret no-such-secret" in problem["detail"]
    assert upstream.seen("up-unkeyed")["requests"] == 0
    assert _audit(api, "secret.reveal")[0]["outcome"] == "not-found"


async def test_an_agents_call_of_a_deployment_without_its_secret_fails_as_secret_not_found(
    gateway: Gateway, api: Answers, upstream: Upstream, tenant: tuple[str, str]
) -> None:
    await asyncio.to_thread(_deploy, api, upstream, "up-agent-unkeyed", "never-set")
    body = {"model": "up-agent-unkeyed", "messages": [{"role": "user", "content": "plan"}]}
    with pytest.raises(NotFound) as missing:
        await gateway.chat(body, context=CallContext(tenant=tenant[0], caller="agent:planner@1"))
    assert missing.value.kind == "secret-not-found" and missing.value.field == "model"
    assert "no secret never-set" in missing.value.detail


async def test_a_sealed_value_copied_into_another_row_does_not_open_there(
    stack: Stack, api: Answers, upstream: Upstream, tenant: tuple[str, str]
) -> None:
    value = _value()
    await asyncio.to_thread(api.http.post, "/v1/secrets", json={"name": "original-key", "value": value})
    pool = await connect_db(stack.database_url)
    try:  # what someone with write access to the database could do: the blobs of one row into another
        row = await stored.sealed(pool, tenant[0], "original-key")
        assert row is not None
        assert await stored.put(
            pool,
            scope=tenant[0],
            name="copied-key",
            ciphertext=row.ciphertext,
            wrapped_key=row.wrapped_key,
            master_id=row.master_id,
            actor="intruder",
        )
    finally:
        await pool.close()
    upstream.require_key("up-copied", value)
    await asyncio.to_thread(_deploy, api, upstream, "up-copied", "copied-key")
    problem = _problem(await asyncio.to_thread(_chat, api, "up-copied"), 409, "secret-unreadable", "name")
    assert "copied-key does not open under the master key" in problem["detail"]
    assert upstream.seen("up-copied")["requests"] == 0
    reveal = (await asyncio.to_thread(_audit, api, "secret.reveal"))[0]
    assert (reveal["target"], reveal["outcome"]) == ("copied-key", "unreadable")
    # While it is there the master key cannot be rotated (that would change nothing), and the problem names it.
    with Answers(stack, stack.token).http as platform_admin:
        refused = await asyncio.to_thread(platform_admin.post, "/v1/secrets:rotate-master")
        assert "copied-key does not open" in _problem(refused, 409, "secret-unreadable", "new_key")["detail"]
    assert not {"master.key.next", "master.key.old"} & set(await asyncio.to_thread(os.listdir, stack.root))
    (await asyncio.to_thread(api.http.delete, "/v1/secrets/copied-key")).raise_for_status()


def test_an_agent_run_fails_clearly_without_its_models_secret_and_answers_once_it_is_set(
    stack: Stack, upstream: Upstream
) -> None:
    value = _value()
    upstream.require_key("up-agent", value)
    admin = Answers(stack, stack.token)
    with admin.http as http, Client(api_url=stack.api_url, token=stack.token) as af:
        _deploy(admin, upstream, "up-agent", "agent-model-key")
        agent = {"name": "keyed-agent", "version": "1", "instructions": "Answer {{$.input.question}}"}
        made = http.post("/v1/agents", json={**agent, "model": "up-agent"})
        assert made.status_code in (200, 201), made.text
        failed = af.wait_run(af.start_run(agent="keyed-agent", input={"question": "tides?"})["id"], timeout=90)
        assert failed["state"] == "failed" and "secret-not-found" in (failed["error"] or ""), failed
        assert upstream.seen("up-agent")["requests"] == 0
        http.post("/v1/secrets", json={"name": "agent-model-key", "value": value}).raise_for_status()
        answered = af.wait_run(af.start_run(agent="keyed-agent", input={"question": "tides?"})["id"], timeout=90)
        assert answered["state"] == "succeeded" and answered["output"] == 'echo: {"question":"tides?"}', answered
        assert upstream.seen("up-agent")["headers"]["authorization"] == f"Bearer {value}"
        assert value not in json.dumps(document([failed, answered]))
    assert not admin.holds(value)


def test_one_tenant_can_neither_see_nor_use_nor_delete_another_tenants_secret(
    stack: Stack, api: Answers, upstream: Upstream
) -> None:
    theirs = _value()
    _, other_key = _new_tenant(stack, "sec-other")
    with Answers(stack, other_key).http as owner:
        owner.post("/v1/secrets", json={"name": "their-key", "value": theirs}).raise_for_status()
    upstream.require_key("up-borrowing", theirs)
    assert "their-key" not in [i["name"] for i in api.http.get("/v1/secrets").json()["items"]]
    _problem(api.http.delete("/v1/secrets/their-key"), 404, "secret-not-found")
    _deploy(api, upstream, "up-borrowing", "their-key")
    _problem(_chat(api, "up-borrowing"), 404, "secret-not-found", "model")
    assert upstream.seen("up-borrowing")["requests"] == 0
    _problem(api.http.get("/v1/secrets", params={"scope": "platform"}), 403, "forbidden")
    _problem(api.http.post("/v1/secrets:rotate-master", json={}), 403, "forbidden")
    with Answers(stack, other_key).http as owner:
        assert [i["name"] for i in owner.get("/v1/secrets").json()["items"]] == ["their-key"]
    assert not api.holds(theirs)


def test_a_secrets_value_is_nowhere_but_in_the_upstreams_hands(stack: Stack, upstream: Upstream) -> None:
    """Set it, use it through the gateway, run a tool, read every answer, then search the database's dump,
    every log of the stack and every answer for the value."""
    value = _value()
    every = Answers(stack, stack.token)
    with every.http as http:
        http.post("/v1/secrets", json={"name": "searched-key", "value": value}).raise_for_status()
        upstream.require_key("up-searched", value)
        _deploy(every, upstream, "up-searched", "searched-key")
        assert _chat(every, "up-searched").status_code == 200
        streamed = {"model": "up-searched", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        assert http.post("/v1/llm/chat/completions", json=streamed).status_code == 200
        run = http.post("/v1/runs", json={"tool": "noop", "input": {"note": "secrets stay out"}})
        assert run.status_code == 201, run.text
        with Client(api_url=stack.api_url, token=stack.token) as client:
            client.wait_run(run.json()["id"], timeout=30)
            events = list(client.events(run.json()["id"], idle_timeout=0.5))
        for path in ("/v1/secrets", "/v1/models", "/v1/llm/calls", "/v1/audit", f"/v1/runs/{run.json()['id']}"):
            assert http.get(path).status_code == 200
    assert upstream.seen("up-searched")["headers"]["authorization"] == f"Bearer {value}"
    assert events and value not in json.dumps(document(events))
    assert not every.holds(value)
    dump = subprocess.run([bin_path("pg_dump"), "--dbname", stack.database_url], capture_output=True, check=True).stdout
    assert b"searched-key" in dump and b"secret.reveal" in dump
    logs = [log for log in (stack.root / "logs").iterdir() if log.name != "upstream.log"]
    assert any(log.name.startswith("control-plane") for log in logs)
    for made in MADE:  # this test's value, and every other this module's tests set before it
        assert made.encode() not in dump
        for log in logs:
            assert made.encode() not in log.read_bytes(), log


# --- sealing ---------------------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_under_its_master_key_in_its_own_row() -> None:
    key, other = MasterKey.generate(), MasterKey.generate()
    sealed = key.seal("acme", "openai-key", "sk-1")
    assert key.open("acme", "openai-key", sealed.ciphertext, sealed.wrapped_key) == "sk-1"
    assert b"sk-1" not in sealed.ciphertext + sealed.wrapped_key and sealed.master_id == key.id != other.id
    for scope, name, master in [("beta", "openai-key", key), ("acme", "other-key", key), ("acme", "openai-key", other)]:
        with pytest.raises(EnvelopeError):
            master.open(scope, name, sealed.ciphertext, sealed.wrapped_key)
    with pytest.raises(EnvelopeError):  # the value's blob in the place of the wrapped key
        key.open("acme", "openai-key", sealed.wrapped_key, sealed.ciphertext)
    rewrapped = key.rewrap(other, "acme", "openai-key", sealed.wrapped_key)
    assert rewrapped != sealed.wrapped_key and other.open("acme", "openai-key", sealed.ciphertext, rewrapped) == "sk-1"
    assert repr(key) == f"MasterKey(id={key.id})" and key.text() not in repr(key)
    with pytest.raises(EnvelopeError):
        MasterKey.from_text(base64.b64encode(b"short").decode())


# --- the master key --------------------------------------------------------------------------------


def test_the_master_key_setting_is_never_shown_and_its_file_defaults_to_af_home(tmp_path: Path) -> None:
    key = MasterKey.generate()
    env = {"AF_DATABASE_URL": "postgresql://127.0.0.1/x", "AF_MASTER_KEY": key.text(), "AF_HOME": str(tmp_path)}
    settings = load_settings(env=env)
    assert settings.master_key == key.text() and key.text() not in repr(settings)
    assert settings.master_key_file == str(tmp_path / "master.key")
    with pytest.raises(SettingsError, match=r"^AF_MASTER_KEY: a master key is base64 text$"):
        master_key.load("not base64!", "")


def _sealed_rows(stack: Stack, names: list[tuple[str, str]]) -> dict[tuple[str, str], stored.SealedRow]:
    """The rows as the database holds them."""

    async def read() -> dict[tuple[str, str], stored.SealedRow | None]:
        pool = await connect_db(stack.database_url)
        try:
            return {where: await stored.sealed(pool, *where) for where in names}
        finally:
            await pool.close()

    rows = asyncio.run(read())
    assert all(rows.values())
    return {where: row for where, row in rows.items() if row is not None}


def test_rotating_the_master_key_rewraps_every_data_key_and_keeps_every_secret_readable(
    tmp_root: Path, upstream: Upstream
) -> None:
    with isolated_stack(tmp_root) as stack, stack.extra_control_plane() as running_meanwhile:
        value = _value()
        _, other_key = _new_tenant(stack, "rot")
        with Client(api_url=stack.api_url, token=stack.token) as admin:
            admin.set_secret("rotated-key", value)
            admin.set_secret("rotated-key", _value(), platform=True)
        with Client(api_url=stack.api_url, token=other_key) as other:
            other.set_secret("rotated-key", _value())
        names = [("default", "rotated-key"), ("*", "rotated-key")]
        before = _sealed_rows(stack, names)
        old_file = stack.master_key_file.read_text()

        rotated = _af(stack, stack.token, ["secret", "rotate-master", "-o", "json"])
        assert rotated.exit_code == 0, rotated.output
        answer = json.loads(rotated.output)
        assert answer["secrets"] == 3 and answer["previous_master_id"] == before[names[0]].master_id
        after = _sealed_rows(stack, names)
        for where in names:
            assert after[where].wrapped_key != before[where].wrapped_key
            assert after[where].ciphertext == before[where].ciphertext
            assert after[where].master_id == answer["master_id"] != before[where].master_id
        new_file = stack.master_key_file.read_text()
        assert new_file != old_file and (stack.master_key_file.stat().st_mode & 0o077) == 0
        assert not master_key.backup(stack.master_key_file).exists()
        assert old_file.strip() not in rotated.output and new_file.strip() not in rotated.output

        # Every control plane reveals with the new key: the one that rotated it, one that was running
        # meanwhile (it takes the new key from the shared file), and one starting now.
        upstream.require_key("up-rotated", value)
        for url in (stack.api_url, running_meanwhile):
            api = Answers(stack, stack.token, url)
            with api.http:
                _deploy(api, upstream, "up-rotated", "rotated-key")
                assert _chat(api, "up-rotated").status_code == 200
                assert api.http.post("/v1/secrets", json={"name": f"set-after-{url[-5:]}", "value": "v"}).is_success
        assert (
            _sealed_rows(stack, [("default", f"set-after-{running_meanwhile[-5:]}")]).popitem()[1].master_id
            == (answer["master_id"])
        )
        with stack.extra_control_plane() as url, Client(api_url=url, token=other_key) as other:
            assert [item["version"] for item in other.list_secrets()] == [1]

        # A control plane given another master key refuses to start, saying so in one line.
        wrong = MasterKey.generate()
        env = stack.env(AF_PORT="0", AF_MASTER_KEY=wrong.text())
        refused = subprocess.run(
            [sys.executable, "-m", "control_plane", "start"], env=env, capture_output=True, text=True, timeout=60
        )
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("af control-plane: AF_MASTER_KEY: master key") and wrong.id in line
        assert answer["master_id"] in line and wrong.text() not in line


async def test_a_rotation_cut_short_after_its_commit_is_finished_by_the_next_start(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = f"secrets_{secrets.token_hex(4)}"
    await ensure_database(postgres_server.dsn, database)
    pool = await connect_db(dsn_with_database(postgres_server.dsn, database))
    try:
        await migrate(pool)
        file = tmp_path / "master.key"
        store = await SecretStore.open(pool, master_key_text="", master_key_file=str(file))
        await store.put("acme", "kept", "v1", actor="test")
        old, new = MasterKey.from_text(file.read_text()), MasterKey.generate()
        # The steps of a rotation up to its commit, as if its control plane died right after it.
        await asyncio.to_thread(master_key.stage, file, old, new)
        rewrap = functools.partial(_rewrap, old, new)
        async with stored.rotation(pool) as conn:
            assert await stored.rewrap_all(conn, old.id, new.id, rewrap) == 1
        finished = await SecretStore.open(pool, master_key_text="", master_key_file=str(file))
        assert finished.master_id == new.id and MasterKey.from_text(file.read_text()).id == new.id
        assert await asyncio.to_thread(os.listdir, tmp_path) == ["master.key"]
        assert await finished.reveal("acme", "kept", purpose="test") == "v1"
        # One cut short before its commit leaves the key in force, and the next start as it was.
        await asyncio.to_thread(master_key.stage, file, new, MasterKey.generate())
        unchanged = await SecretStore.open(pool, master_key_text="", master_key_file=str(file))
        assert unchanged.master_id == new.id and await unchanged.reveal("acme", "kept", purpose="test") == "v1"
    finally:
        await pool.close()


def _rewrap(old: MasterKey, new: MasterKey, row: stored.SealedRow) -> bytes:
    return old.rewrap(new, row.scope, row.name, row.wrapped_key)


def test_with_the_master_key_in_the_environment_rotation_needs_the_new_key(tmp_root: Path) -> None:
    first, second = MasterKey.generate(), MasterKey.generate()
    with isolated_stack(tmp_root, AF_MASTER_KEY=first.text()) as stack:
        assert not stack.master_key_file.exists()
        with Client(api_url=stack.api_url, token=stack.token) as admin:
            admin.set_secret("env-key", _value())
        refused = _af(stack, stack.token, ["secret", "rotate-master"])
        assert refused.exit_code == 1 and "AF_MASTER_KEY" in refused.output, refused.output
        with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}) as http:
            _problem(http.post("/v1/secrets:rotate-master"), 409, "master-key-in-environment", "new_key")
            short = {"new_key": base64.b64encode(b"too short").decode()}
            _problem(http.post("/v1/secrets:rotate-master", json=short), 422, "validation-error", "new_key")
            again = {"new_key": first.text()}
            _problem(http.post("/v1/secrets:rotate-master", json=again), 422, "validation-error", "new_key")
        new_key_file = stack.root / "new.key"
        new_key_file.write_text(second.text() + "\n")
        rotated = _af(stack, stack.token, ["secret", "rotate-master", "--new-key-file", str(new_key_file)])
        assert rotated.exit_code == 0, rotated.output
        assert rotated.output.strip() == f"master key rotated: 1 secrets re-wrapped (key {first.id} -> {second.id})"
        with stack.extra_control_plane(AF_MASTER_KEY=second.text()) as url, Client(api_url=url, token=stack.token) as c:
            assert [item["name"] for item in c.list_secrets()] == ["env-key"]
