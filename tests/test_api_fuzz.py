"""Schemathesis against the live OpenAPI document of a control plane: whatever it sends, authenticated as a
platform admin, the API answers with no 5xx."""

import secrets
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import Stack

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def _platform_admin_of_own_tenant(url: str, stack: Stack) -> str:
    """A platform admin key whose home is a new tenant, so that what the fuzzer registers and starts stays out
    of the way of the tests that use tenant default."""
    admin = {"Authorization": f"Bearer {stack.token}"}
    tenant = f"fuzz-{secrets.token_hex(4)}"
    created = httpx.post(f"{url}/v1/tenants", json={"name": tenant, "admin_key": False}, headers=admin)
    assert created.status_code == 201, created.text
    made = httpx.post(f"{url}/v1/tenants/{tenant}/keys", json={"role": "platform-admin"}, headers=admin)
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


def test_fuzzed_requests_never_get_a_server_error(stack: Stack) -> None:
    # A control plane of its own: the fuzzer's failed token exchanges must not brake other tests' address.
    with stack.extra_control_plane(AF_AUTH_FAILURES_PER_MINUTE="1000000") as url:
        key = _platform_admin_of_own_tenant(url, stack)
        argv = [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {key}",
            "--checks",
            "not_a_server_error",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            # One worker: CPython 3.11's ast.parse, which Hypothesis calls to describe strategies, is not thread-safe.
            "--workers",
            "1",
            "--seed",
            "7",
            "--report",
            "junit",
            "--report-junit-path",
            str(stack.root / "schemathesis.xml"),
        ]
        # In the test's temp dir: schemathesis keeps a cache in its working directory.
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, cwd=stack.root)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
