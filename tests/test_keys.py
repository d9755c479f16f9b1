"""API keys against the real stack: tenant admins list their tenant's keys by id (never the key itself) and
revoke them; a revoked key fails authentication at once, remembered or not, and so do the access and refresh
tokens got with it; another tenant's keys are not there; the last platform-admin key stays; `af keys` does it
from the command line; the OpenAPI document declares the bearer scheme of every authenticated route."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Stack, isolated_stack

from tests.test_cli_e2e import AF, one_error_line
from tests.test_tenants import _as, _key, _tenant

UNAUTHORIZED = "urn:agentflow:problem:unauthorized"


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30) as c:
        yield c


def _id(key: str) -> str:
    return key.split("_")[1]


def _assert_unauthorized(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["type"] == UNAUTHORIZED


def test_a_tenant_admin_lists_its_tenants_keys_by_id_and_a_viewer_may_not(stack: Stack, admin: httpx.Client) -> None:
    tenant, tenant_admin = _tenant(admin)
    with _as(stack, tenant_admin) as own:
        viewer = _key(own, tenant, "viewer")
        made = own.post(f"/v1/tenants/{tenant}/keys", json={"role": "viewer"}).json()
        assert made["id"] == made["prefix"] == _id(made["key"])
        own.delete(f"/v1/keys/{made['id']}")
        listed = own.get("/v1/keys")
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        assert [(k["id"], k["role"], k["tenant"]) for k in items] == [
            (_id(tenant_admin), "tenant-admin", tenant),
            (_id(viewer), "viewer", tenant),
        ]
        assert all(k["revoked_at"] is None and k["created_at"] for k in items)
        assert tenant_admin not in listed.text and viewer not in listed.text and "hash" not in listed.text
        # A tenant admin sees its own tenant only.
        assert own.get("/v1/keys", params={"tenant": "default"}).status_code == 403
    with _as(stack, viewer) as viewing:
        refused = viewing.get("/v1/keys")
        assert refused.status_code == 403 and "keys:read" in refused.json()["detail"]
    # A platform admin names the tenant.
    assert {k["id"] for k in admin.get("/v1/keys", params={"tenant": tenant}).json()["items"]} == {
        _id(tenant_admin),
        _id(viewer),
    }


def test_a_revoked_key_fails_at_once_with_every_token_got_with_it(stack: Stack, admin: httpx.Client) -> None:
    tenant, tenant_admin = _tenant(admin)
    with _as(stack, tenant_admin) as own:
        developer = _key(own, tenant, "developer")
        tokens = httpx.post(f"{stack.api_url}/v1/auth/token", json={"api_key": developer}).json()
        with _as(stack, developer) as dev, _as(stack, tokens["access_token"]) as by_token:
            # Used once, so that the control plane remembers the verified key.
            assert dev.get("/v1/tools").status_code == 200
            assert by_token.get("/v1/tools").status_code == 200

            revoked = own.delete(f"/v1/keys/{_id(developer)}")
            assert revoked.status_code == 200, revoked.text
            assert revoked.json()["id"] == _id(developer) and revoked.json()["revoked_at"]

            _assert_unauthorized(dev.get("/v1/tools"))
            _assert_unauthorized(by_token.get("/v1/tools"))
        exchanged = httpx.post(f"{stack.api_url}/v1/auth/token", json={"api_key": developer})
        _assert_unauthorized(exchanged)
        refreshed = httpx.post(f"{stack.api_url}/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert refreshed.status_code == 401 and "revoked" in refreshed.json()["detail"]

        assert [k["id"] for k in own.get("/v1/keys").json()["items"]] == [_id(tenant_admin)]
        every = own.get("/v1/keys", params={"include_revoked": "true"}).json()["items"]
        assert [(k["id"], k["revoked_at"] is not None) for k in every] == [
            (_id(tenant_admin), False),
            (_id(developer), True),
        ]
        # Revoking it again changes nothing.
        again = own.delete(f"/v1/keys/{_id(developer)}")
        assert again.status_code == 200 and again.json()["revoked_at"] == revoked.json()["revoked_at"]
        trail = own.get("/v1/audit").json()["items"]
    revocations = [row for row in trail if row["action"] == "key.revoke"]
    assert len(revocations) == 1
    assert revocations[0]["target"] == f"key:{_id(developer)}@{tenant}:developer"
    assert revocations[0]["actor"] == f"key:{_id(tenant_admin)}" and revocations[0]["outcome"] == "revoked"


def test_a_revoked_key_used_again_and_again_is_refused_but_never_braked(stack: Stack, admin: httpx.Client) -> None:
    tenant, tenant_admin = _tenant(admin)
    with _as(stack, tenant_admin) as own:
        stale = _key(own, tenant, "viewer")
        assert own.delete(f"/v1/keys/{_id(stale)}").status_code == 200
    # From an address of its own, as a CI job still holding the key would: more than the brake's 10 a minute.
    transport = httpx.HTTPTransport(local_address="127.0.0.21")
    with httpx.Client(base_url=stack.api_url, transport=transport, timeout=30) as job:
        answers = [job.get("/v1/tools", headers={"Authorization": f"Bearer {stale}"}) for _ in range(6)]
        answers += [job.post("/v1/auth/token", json={"api_key": stale}) for _ in range(6)]
        assert [answer.status_code for answer in answers] == [401] * 12
        assert job.get("/v1/tools", headers={"Authorization": f"Bearer {tenant_admin}"}).status_code == 200


def test_another_tenants_keys_are_not_there_and_platform_admin_keys_are_out_of_reach(
    stack: Stack, admin: httpx.Client
) -> None:
    tenant, tenant_admin = _tenant(admin)
    _, other_admin = _tenant(admin)
    platform_admin = _key(admin, tenant, "platform-admin")
    with _as(stack, tenant_admin) as own:
        missing = own.delete(f"/v1/keys/{_id(other_admin)}")
        assert missing.status_code == 404 and missing.json()["field"] == "id"
        assert own.delete("/v1/keys/nosuchkey").status_code == 404
        refused = own.delete(f"/v1/keys/{_id(platform_admin)}")
        assert refused.status_code == 403 and "platform-admin" in refused.json()["detail"]
    with _as(stack, other_admin) as theirs:
        assert theirs.get("/v1/tools").status_code == 200
    # A platform admin revokes any tenant's key.
    assert admin.delete(f"/v1/keys/{_id(other_admin)}").status_code == 200
    assert admin.delete(f"/v1/keys/{_id(platform_admin)}").status_code == 200
    with _as(stack, platform_admin) as revoked:
        _assert_unauthorized(revoked.get("/v1/tenants"))


def test_the_last_platform_admin_key_is_not_revoked(tmp_root: Path) -> None:
    with isolated_stack(tmp_root) as own, _as(own, own.token) as admin:
        refused = admin.delete(f"/v1/keys/{_id(own.token)}")
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"] == "urn:agentflow:problem:last-platform-admin"
        second = _key(admin, "default", "platform-admin")
        assert admin.delete(f"/v1/keys/{_id(own.token)}").status_code == 200
        with _as(own, second) as successor:
            assert successor.get("/v1/keys").status_code == 200
            assert successor.delete(f"/v1/keys/{_id(second)}").status_code == 409


def test_af_keys_lists_and_revokes(stack: Stack, admin: httpx.Client, tmp_path: Path) -> None:
    tenant, tenant_admin = _tenant(admin)
    with _as(stack, tenant_admin) as own:
        operator = _key(own, tenant, "operator")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    env.update(AF_HOME=str(tmp_path), AF_API_URL=stack.api_url, AF_TOKEN=tenant_admin, NO_COLOR="1")

    def af(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(AF), *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    listed = af("keys", "ls")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "TENANT", "ROLE", "CREATED", "REVOKED"]
    assert [row.split()[:3] for row in rows] == [
        [_id(tenant_admin), tenant, "tenant-admin"],
        [_id(operator), tenant, "operator"],
    ]

    revoked = af("keys", "revoke", _id(operator))
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.strip() == f"key {_id(operator)} (operator of tenant {tenant}) revoked"
    assert _id(operator) not in af("keys", "ls").stdout
    assert _id(operator) in af("keys", "ls", "--all").stdout

    missing = af("keys", "revoke", "nosuchkey")
    assert missing.returncode == 1
    assert "no API key nosuchkey" in one_error_line(missing)

    env["AF_TOKEN"] = operator
    refused = af("keys", "ls")
    assert refused.returncode == 1 and "not valid" in one_error_line(refused)


def test_the_openapi_document_declares_bearer_on_every_authenticated_route(stack: Stack) -> None:
    document = httpx.get(f"{stack.api_url}/openapi.json").json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    operations = {(path, verb): op for path, item in document["paths"].items() for verb, op in item.items()}
    assert operations[("/v1/keys", "get")]["security"] == [{"bearer": []}]
    assert operations[("/v1/runs", "post")]["security"] == [{"bearer": []}]
    assert "security" not in operations[("/v1/auth/token", "post")]
    assert "security" not in operations[("/healthz", "get")]
