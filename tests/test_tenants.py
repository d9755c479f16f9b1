"""Tenants, roles and limits against the real stack: platform admins make tenants and their first keys,
each role is held to its permissions with a 403 that names the missing one, one tenant never sees another's
runs, tools or workflows, the audit trail is the tenant admins', and quotas answer 429 with Retry-After."""

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Stack

from bus import Notice, connect
from bus.watch import listen

TOOL = {"name": "probe", "version": "1.0.0", "runtime": {"command": ["true"]}}
WORKFLOW = {"name": "one-step", "version": "1.0.0", "kind": "dag", "steps": [{"name": "a", "tool": "probe@1.0.0"}]}


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30) as c:
        yield c


def _as(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def _tenant(admin: httpx.Client, **limits: Any) -> tuple[str, str]:
    """A new tenant and its first tenant-admin key."""
    name = f"t-{secrets.token_hex(4)}"
    answer = admin.post("/v1/tenants", json={"name": name, **limits})
    assert answer.status_code == 201, answer.text
    return name, answer.json()["admin_key"]["key"]


def _key(client: httpx.Client, tenant: str, role: str) -> str:
    answer = client.post(f"/v1/tenants/{tenant}/keys", json={"role": role})
    assert answer.status_code == 201, answer.text
    key: str = answer.json()["key"]
    return key


def _problem(answer: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    problem: dict[str, Any] = answer.json()
    assert problem["type"] == f"urn:agentflow:problem:{slug}"
    return problem


def test_a_platform_admin_creates_a_tenant_with_its_first_admin_key(stack: Stack, admin: httpx.Client) -> None:
    name, key = _tenant(admin)
    assert name in [t["name"] for t in admin.get("/v1/tenants").json()["items"]]
    with _as(stack, key) as tenant_admin:
        assert tenant_admin.get("/v1/tools").json() == {"items": []}
        tokens = tenant_admin.post("/v1/auth/token", json={"api_key": key}).json()
    with _as(stack, tokens["access_token"]) as by_token:
        assert by_token.post("/v1/tools", json=TOOL).status_code == 201
    _problem(admin.post("/v1/tenants", json={"name": name}), 409, "tenant-exists")


@pytest.mark.parametrize(
    "name",
    ["a.b", "a*", "a>", "*", ">", "tenant.>", "café", "ténant", "名前", "A", "-a", "", "a" * 64, "a b", "a\n", "a/b"],
)
def test_a_tenant_name_that_is_no_subject_token_is_refused(admin: httpx.Client, name: str) -> None:
    problem = _problem(admin.post("/v1/tenants", json={"name": name}), 422, "invalid-name")
    assert problem["field"] == "name"


async def test_refused_tenant_names_reach_neither_the_registry_nor_nats(stack: Stack, admin: httpx.Client) -> None:
    bad = ["x.y", "x*", "x>", "ünï", "b" * 70]
    bus = await connect(stack.nats_url, "test-tenants")
    seen: list[str] = []

    async def collect(notice: Notice) -> None:
        seen.append(notice.subject)

    await listen(bus, ">", collect)
    try:
        for name in bad:
            assert (await asyncio.to_thread(admin.post, "/v1/tenants", json={"name": name})).status_code == 422
        await asyncio.sleep(0.3)
    finally:
        await bus.close()
    assert not [s for s in seen if any(name in s for name in bad)]
    listed = await asyncio.to_thread(admin.get, "/v1/tenants")
    assert not set(bad) & {t["name"] for t in listed.json()["items"]}


def test_a_viewer_cannot_register_a_tool(stack: Stack, admin: httpx.Client) -> None:
    tenant, key = _tenant(admin)
    with _as(stack, key) as tenant_admin:
        viewer_key = _key(tenant_admin, tenant, "viewer")
    with _as(stack, viewer_key) as viewer:
        assert viewer.get("/v1/tools").status_code == 200
        problem = _problem(viewer.post("/v1/tools", json=TOOL), 403, "forbidden")
        assert problem["detail"] == f"role viewer lacks tools:write in tenant {tenant}"
        _problem(viewer.post("/v1/runs", json={"tool": "probe", "input": {}}), 403, "forbidden")


def test_each_role_may_do_what_its_row_says(stack: Stack, admin: httpx.Client) -> None:
    tenant, key = _tenant(admin)
    with _as(stack, key) as tenant_admin:
        keys = {role: _key(tenant_admin, tenant, role) for role in ("developer", "operator", "viewer")}
    with _as(stack, keys["developer"]) as developer:
        assert developer.post("/v1/tools", json=TOOL).status_code == 201
        assert developer.post("/v1/workflows", json=WORKFLOW).status_code == 201
        run = developer.post("/v1/runs", json={"tool": "probe", "input": {}, "queue": "nobody-pulls-this"}).json()
        detail = _problem(developer.post(f"/v1/runs/{run['id']}/cancel"), 403, "forbidden")["detail"]
        assert detail == f"role developer lacks runs:cancel in tenant {tenant}"
        _problem(developer.get("/v1/audit"), 403, "forbidden")
    with _as(stack, keys["operator"]) as operator:
        _problem(operator.post("/v1/runs", json={"tool": "probe", "input": {}}), 403, "forbidden")
        assert operator.get("/v1/workers").status_code == 200
        assert operator.post(f"/v1/runs/{run['id']}/cancel").status_code == 200
    with _as(stack, keys["viewer"]) as viewer:
        assert viewer.get(f"/v1/runs/{run['id']}").json()["state"] == "cancelled"
        _problem(viewer.post(f"/v1/tenants/{tenant}/keys", json={"role": "viewer"}), 403, "forbidden")
        _problem(viewer.get("/v1/tenants"), 403, "forbidden")


def test_a_tenant_admin_makes_keys_only_in_its_tenant_and_never_a_platform_admin(
    stack: Stack, admin: httpx.Client
) -> None:
    tenant, key = _tenant(admin)
    other, _ = _tenant(admin)
    with _as(stack, key) as tenant_admin:
        detail = _problem(tenant_admin.post(f"/v1/tenants/{other}/keys", json={"role": "viewer"}), 403, "forbidden")
        assert detail["detail"] == f"role tenant-admin lacks keys:write in tenant {other}"
        _problem(tenant_admin.post(f"/v1/tenants/{tenant}/keys", json={"role": "platform-admin"}), 403, "forbidden")
        _problem(tenant_admin.post("/v1/tenants", json={"name": f"{tenant}-x"}), 403, "forbidden")
        unknown_role = tenant_admin.post(f"/v1/tenants/{tenant}/keys", json={"role": "root"})
        unknown = _problem(unknown_role, 422, "validation-error")
        assert unknown["field"] == "role"
    _problem(admin.post("/v1/tenants/no-such-tenant/keys", json={"role": "viewer"}), 404, "not-found")


def test_a_token_of_one_tenant_finds_nothing_of_another(stack: Stack, admin: httpx.Client) -> None:
    _, key_a = _tenant(admin)
    _, key_b = _tenant(admin)
    with _as(stack, key_b) as b:
        assert b.post("/v1/tools", json=TOOL).status_code == 201
        assert b.post("/v1/workflows", json=WORKFLOW).status_code == 201
        run = b.post("/v1/runs", json={"tool": "probe", "input": {}, "queue": "nobody-pulls-this"}).json()
    access_a = httpx.post(f"{stack.api_url}/v1/auth/token", json={"api_key": key_a}).json()["access_token"]
    for credential in (key_a, access_a):
        with _as(stack, credential) as a:
            _problem(a.get(f"/v1/runs/{run['id']}"), 404, "not-found")
            _problem(a.get(f"/v1/runs/{run['id']}/events"), 404, "not-found")
            _problem(a.post(f"/v1/runs/{run['id']}/cancel"), 404, "not-found")
            _problem(a.post(f"/v1/runs/{run['id']}/signal", json={"name": "go"}), 404, "not-found")
            _problem(a.get("/v1/tools/probe/versions/1.0.0"), 404, "not-found")
            _problem(a.get("/v1/workflows/one-step/versions/latest"), 404, "not-found")
            assert a.get("/v1/runs").json()["items"] == []
            assert a.get("/v1/tools").json()["items"] == []
            _problem(a.post("/v1/runs", json={"tool": "probe", "input": {}}), 422, "unknown-tool")
    with _as(stack, key_b) as b:
        assert b.get(f"/v1/runs/{run['id']}").json()["state"] in ("pending", "running")


def test_tenant_admins_read_their_audit_trail(stack: Stack, admin: httpx.Client) -> None:
    tenant, key = _tenant(admin)
    with _as(stack, key) as tenant_admin:
        viewer_key = _key(tenant_admin, tenant, "viewer")
        assert tenant_admin.post("/v1/tools", json=TOOL).status_code == 201
        assert tenant_admin.post("/v1/auth/token", json={"api_key": key}).status_code == 200
        with _as(stack, viewer_key) as viewer:
            _problem(viewer.post("/v1/tools", json=TOOL), 403, "forbidden")
            _problem(viewer.get("/v1/audit"), 403, "forbidden")
        prefix = key.split("_")[1]
        with _as(stack, f"af_{prefix}_not-the-secret") as wrong:
            assert wrong.get("/v1/tools").status_code == 401
        items = tenant_admin.get("/v1/audit", params={"limit": 50}).json()["items"]
        seen = {(e["action"], e["outcome"]) for e in items}
        assert {
            ("key.create", "created"),
            ("tool.register", "created"),
            ("auth.token", "issued"),
            ("auth.key", "authenticated"),
            ("authz", "denied"),
            ("auth.bearer", "rejected"),
        } <= seen
        assert all(e["tenant"] == tenant and e["source"] == "127.0.0.1" and e["at"] for e in items)
        assert len(tenant_admin.get("/v1/audit", params={"limit": 2}).json()["items"]) == 2
        _problem(tenant_admin.get("/v1/audit", params={"tenant": "default"}), 403, "forbidden")
    assert admin.get("/v1/audit", params={"tenant": tenant}).json()["items"]
    assert ("tenant.create", "created") in {(e["action"], e["outcome"]) for e in admin.get("/v1/audit").json()["items"]}


def test_a_tenant_over_its_concurrent_runs_gets_429(stack: Stack, admin: httpx.Client) -> None:
    _, key = _tenant(admin, max_concurrent_runs=2)
    with _as(stack, key) as client:
        assert client.post("/v1/tools", json=TOOL).status_code == 201
        run = {"tool": "probe", "input": {}, "queue": "nobody-pulls-this"}
        assert [client.post("/v1/runs", json=run).status_code for _ in range(2)] == [201, 201]
        over = client.post("/v1/runs", json=run)
        _problem(over, 429, "quota-exceeded")
        assert int(over.headers["Retry-After"]) >= 1
        _problem(client.post("/v1/runs:batch", json={"runs": [run]}), 429, "quota-exceeded")


def test_a_tenant_over_its_request_rate_gets_429(stack: Stack, admin: httpx.Client) -> None:
    _, key = _tenant(admin, requests_per_second=2)
    with _as(stack, key) as client:
        answers = [client.get("/v1/tools") for _ in range(6)]
        limited = [a for a in answers if a.status_code == 429]
        assert limited, [a.status_code for a in answers]
        _problem(limited[0], 429, "rate-limited")
        assert int(limited[0].headers["Retry-After"]) >= 1
        time.sleep(1.1)
        assert client.get("/v1/tools").status_code == 200
    # Other tenants are not slowed down.
    assert all(admin.get("/v1/tools").status_code == 200 for _ in range(6))


def test_every_run_started_is_an_audit_row_written_with_the_run(stack: Stack, admin: httpx.Client) -> None:
    _, key = _tenant(admin)
    with _as(stack, key) as tenant_admin:
        one = tenant_admin.post("/v1/runs", json={"tool": "noop", "input": {}}).json()["id"]
        batch = tenant_admin.post("/v1/runs:batch", json={"runs": [{"tool": "noop", "input": {}}] * 2}).json()
        again = tenant_admin.post("/v1/runs", json={"tool": "noop", "input": {}}, headers={"Idempotency-Key": "k"})
        repeat = tenant_admin.post("/v1/runs", json={"tool": "noop", "input": {}}, headers={"Idempotency-Key": "k"})
        assert repeat.json()["id"] == again.json()["id"]
        started = {
            e["target"]
            for e in tenant_admin.get("/v1/audit", params={"limit": 50}).json()["items"]
            if e["action"] == "run.start"
        }
    assert started == {one, again.json()["id"], *(item["id"] for item in batch["items"])}
