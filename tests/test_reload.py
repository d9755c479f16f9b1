"""Settings that reload without a restart, on real processes: a control plane and a worker given a config file
(``AF_CONFIG``) take on its changed limits and log level on SIGHUP, or when the file changes; a bad file is
refused with one line, and the settings in force stay."""

import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow import AsyncClient

from bus.config import SettingsError, reloadable
from control_plane.settings import Settings as ControlPlaneSettings
from control_plane.stack.processes import stop
from tests.conftest import ControlPlane, Stack, eventually, expect_problem
from worker.settings import Settings as WorkerSettings
from worker.settings import load as load_worker_settings


def write(path: Path, text: str) -> None:
    """Replace the file at once, as an editor or a Kubernetes ConfigMap does: a reload never reads half of it."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    os.replace(partial, path)


def lines(log: Path) -> list[dict[str, Any]]:
    """The process's JSON log lines so far."""
    return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]


def reload_lines(log: Path) -> list[dict[str, Any]]:
    return [line for line in lines(log) if line["logger"] == "bus.reload"]


async def tenant_ceiling(another: ControlPlane, key: str) -> int:
    """The tenant's in-flight limit as this control plane's admission has it (the platform's ceiling: the
    tenant sets none of its own)."""
    async with AsyncClient(api_url=another.url, token=key) as af:
        return int((await af.list_queues())["max_in_flight"])


async def test_sighup_takes_on_the_changed_file_and_a_bad_file_is_refused_with_one_line(
    stack: Stack, tmp_path: Path
) -> None:
    config = tmp_path / "agentflow.toml"
    write(config, '[control_plane]\nlog_level = "info"\nmax_in_flight_per_tenant = 50\n')
    key = await stack.tenant_key(f"reload-{uuid.uuid4().hex[:6]}")
    # The stack's processes get AF_LOG_LEVEL, which would win over the file's.
    with stack.another_control_plane(
        unset=("AF_LOG_LEVEL",), AF_CONFIG=str(config), AF_CONFIG_WATCH_SECONDS="0"
    ) as another:
        before = await tenant_ceiling(another, key)
        requests_logged_before = [line for line in lines(another.log) if "GET /v1/queues" in line["message"]]

        write(config, '[control_plane]\nlog_level = "debug"\nmax_in_flight_per_tenant = 7\nhost = "127.0.0.2"\n')
        os.kill(another.process.pid, signal.SIGHUP)

        async def lowered() -> bool:
            return await tenant_ceiling(another, key) == 7

        await eventually("the control plane to take on the lower ceiling", lowered)

        async def requests_logged() -> list[dict[str, Any]]:
            await tenant_ceiling(another, key)
            return [line for line in lines(another.log) if "GET /v1/queues 200" in line["message"]]

        logged = await eventually("a request logged at debug", requests_logged)

        write(config, '[control_plane]\nlog_level = "debug"\nmax_in_flight_per_tenant = -1\n')
        os.kill(another.process.pid, signal.SIGHUP)
        await eventually("the bad value refused", reloads_said(another.log, 2))
        config.unlink()
        os.kill(another.process.pid, signal.SIGHUP)
        await eventually("the missing file refused", reloads_said(another.log, 3))
        after = await tenant_ceiling(another, key)
        still_logged = len(await requests_logged()) > len(logged)
        said = reload_lines(another.log)

    assert (before, requests_logged_before) == (50, [])
    assert logged[0]["level"] == "debug"
    assert said[0]["message"] == (
        "settings reloaded (SIGHUP): AF_LOG_LEVEL=debug, AF_MAX_IN_FLIGHT_PER_TENANT=7; kept until a restart: AF_HOST"
    )
    assert [line["level"] for line in said[1:]] == ["error", "error"]
    assert said[1]["message"] == (
        "settings not reloaded (SIGHUP), those in force stay: AF_MAX_IN_FLIGHT_PER_TENANT: must be 0 (no ceiling) "
        "or more"
    )
    assert said[2]["message"].startswith(
        f"settings not reloaded (SIGHUP), those in force stay: AF_CONFIG: cannot read {config}: [Errno 2]"
    )
    assert (after, still_logged) == (7, True), "the ceiling and the log level of the last good file hold"


async def test_a_changed_file_is_taken_on_without_a_signal(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "agentflow.toml"
    write(config, "[control_plane]\nmax_in_flight_per_tenant = 50\n")
    key = await stack.tenant_key(f"reload-{uuid.uuid4().hex[:6]}")
    with stack.another_control_plane(AF_CONFIG=str(config), AF_CONFIG_WATCH_SECONDS="0.2") as another:
        before = await tenant_ceiling(another, key)
        write(config, "[control_plane]\nmax_in_flight_per_tenant = 9\n")

        async def raised_to_nine() -> bool:
            return await tenant_ceiling(another, key) == 9

        await eventually("the control plane to take on the file's new ceiling", raised_to_nine)
        write(config, "[control_plane]\nmax_in_flight_per_tenant = \n")  # not TOML
        await eventually("the broken file refused", reloads_said(another.log, 2))
        after = await tenant_ceiling(another, key)
        said = [line["message"] for line in reload_lines(another.log)]

    assert before == 50
    assert said[0] == f"settings reloaded ({config} changed): AF_MAX_IN_FLIGHT_PER_TENANT=9"
    assert said[1].startswith(f"settings not reloaded ({config} changed), those in force stay: AF_CONFIG: cannot read")
    assert after == 9


async def test_a_reload_turns_the_gateways_zero_credential_mode_on(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "agentflow.toml"
    write(config, "[control_plane]\nno_llm = 0\n")
    key = await stack.tenant_key(f"reload-{uuid.uuid4().hex[:6]}")
    ask = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
    with stack.another_control_plane(AF_CONFIG=str(config), AF_CONFIG_WATCH_SECONDS="0") as another:
        async with httpx.AsyncClient(base_url=another.url, headers={"Authorization": f"Bearer {key}"}) as http:
            before = await http.post("/v1/llm/chat/completions", json=ask)
            write(config, "[control_plane]\nno_llm = 1\n")
            os.kill(another.process.pid, signal.SIGHUP)
            await eventually("the reload", reloads_said(another.log, 1))
            after = await http.post("/v1/llm/chat/completions", json=ask)

    expect_problem(before, 404, "model-not-found")
    assert (after.status_code, after.json()["model"]) == (200, "mock"), after.text
    assert after.json()["choices"][0]["message"]["content"] == "mock: hi"


async def test_a_worker_takes_on_a_reloaded_concurrency_and_refuses_a_bad_one(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "agentflow.toml"
    write(config, "[worker]\nconcurrency = 2\n")
    process = stack.start_worker("reloads", None, AF_CONFIG=str(config), AF_CONFIG_WATCH_SECONDS="0")
    worker_id = next(name for name, started in stack.workers.items() if started is process)
    log = stack.root / "logs" / f"{worker_id}.log"
    try:
        async with AsyncClient(api_url=stack.api_url, token=stack.token) as af:

            async def concurrency() -> int | None:
                listed = next((w for w in await af.list_workers() if w["id"] == worker_id), None)
                return int(listed["concurrency"]) if listed else None

            before = await eventually("the worker's heartbeat", concurrency)
            write(config, "[worker]\nconcurrency = 5\n")
            os.kill(process.pid, signal.SIGHUP)

            async def raised() -> bool:
                return await concurrency() == 5

            await eventually("the fleet to see the new concurrency", raised)
            write(config, "[worker]\nconcurrency = 0\n")
            os.kill(process.pid, signal.SIGHUP)
            await eventually("the bad concurrency refused", reloads_said(log, 2))
            after = await concurrency()
            said = [line["message"] for line in reload_lines(log)]
    finally:
        stop(process.pid)
        process.wait()

    assert before == 2
    assert said == [
        "settings reloaded (SIGHUP): AF_CONCURRENCY=5",
        "settings not reloaded (SIGHUP), those in force stay: AF_CONCURRENCY: must be at least 1",
    ]
    assert after == 5


def reloads_said(log: Path, count: int) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """``eventually``'s check: the process's reload lines, once there are ``count`` of them."""

    async def check() -> list[dict[str, Any]]:
        found = reload_lines(log)
        return found if len(found) >= count else []

    return check


def test_an_unknown_log_level_is_refused_naming_it() -> None:
    with pytest.raises(SettingsError, match="AF_LOG_LEVEL: expected one of debug, info, warning, error, got 'loud'"):
        load_worker_settings(env={"AF_LOG_LEVEL": "loud"})


@pytest.mark.parametrize("process, kind", [("control plane", ControlPlaneSettings), ("worker", WorkerSettings)])
def test_the_readme_names_every_setting_that_reloads(process: str, kind: type) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (row,) = [line for line in readme.splitlines() if line.startswith(f"| {process} | `AF_LOG_LEVEL`")]
    reloads = row.split(" | ")[1]
    # The gateway's AF_LLM_* settings are named together.
    missing = [name for name in reloadable(kind) if f"`AF_{name.upper()}`" not in reloads]
    assert [name for name in missing if not (name.startswith("llm_") and "`AF_LLM_*`" in reloads)] == []
