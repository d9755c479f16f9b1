"""The embedded stack as a user runs it: `up --detach`, `status`, a run through the SDK, `down`, each a real
process with AF_HOME in a fresh directory; every process it started is gone afterwards, whatever failed. With
`--local-model`, the local model server is one more of its processes, and the gateway's `local` model answers."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agentflow import Client

from control_plane.stack.processes import StackError, free_port, stop
from control_plane.stack.settings import StackSettings
from tests.conftest import ROOT

STACK = [sys.executable, "-m", "control_plane.stack"]
PART_NAMES = ["nats-server", "postgres", "control-plane", "worker-1", "worker-2"]


@pytest.fixture
def home() -> Iterator[Path]:
    """AF_HOME in a fresh directory PostgreSQL can reach: it runs as `nobody` when the tests run as root, and
    pytest's own temp root is private to the user, so this one lives directly under the system temp dir."""
    parent = Path(tempfile.mkdtemp(prefix="af-stack-test-"))
    parent.chmod(0o755)
    try:
        yield parent / "home"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    return {**env, "AF_HOME": str(home), "AF_PORT": str(free_port())}


def af_stack(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*STACK, *args],
        env=stack_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def gone(pid: int) -> bool:
    """The process has exited: no such PID, or only a zombie left for its parent (not us) to reap."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def recorded_pids(home: Path) -> list[int]:
    try:
        state = json.loads((home / "stack.json").read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [part["pid"] for part in state.get("parts", [])]


def clean_up(home: Path, pids: list[int]) -> None:
    """Whatever a test left running: `af down`, then each recorded process still there, by PID."""
    if (home / "stack.json").exists():
        pids = pids or recorded_pids(home)
        af_stack(home, "down")
    for pid in pids:
        if not gone(pid):
            stop(pid, timeout=10)


def test_up_status_run_and_down_start_and_stop_every_part(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids: list[int] = []
    try:
        up = af_stack(home, "up", "--workers", "2", "--detach")
        pids = recorded_pids(home)
        assert up.returncode == 0, up.stderr
        assert up.stdout == ""
        assert "AgentFlow is up" in up.stderr

        state = json.loads((home / "stack.json").read_text())
        assert [part["name"] for part in state["parts"]] == PART_NAMES
        assert state["api_url"].startswith("http://127.0.0.1:")
        for part in state["parts"]:
            assert not gone(part["pid"]), part
            assert Path(part["log"]).is_file(), part

        status = af_stack(home, "status", "--output", "json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] is True
        assert report["api_ready"] is True
        assert report["api_url"] == state["api_url"]
        assert [(p["name"], p["pid"], p["alive"]) for p in report["parts"]] == [
            (part["name"], part["pid"], True) for part in state["parts"]
        ]

        again = af_stack(home, "up", "--workers", "1", "--detach")
        assert again.returncode == 1
        assert again.stderr.splitlines() == [
            f"af: a stack is already running from {home} (af status shows it; af down stops it)"
        ]
        assert recorded_pids(home) == pids, "a refused up must leave the running stack alone"

        token = (home / "admin.key").read_text().strip()
        with Client(api_url=state["api_url"], token=token) as af:
            run = af.start_run(tool="noop", input={"from": "the embedded stack"})
            final = af.wait_run(run["id"], timeout=60)
            assert final["state"] == "succeeded", final
            assert final["output"] == {"from": "the embedded stack"}
            workers = {w["id"] for w in af.list_workers()}
        assert final["tasks"][0]["worker_id"] in workers
        assert len([w for w in workers if w.startswith(("worker-1-", "worker-2-"))]) == 2, workers

        # With only AF_HOME set, the SDK finds the local stack's API and admin key by itself.
        for name in ("AF_API_URL", "AF_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AF_HOME", str(home))
        with Client() as local:
            assert (local.settings.api_url, local.settings.token) == (state["api_url"], token)
            assert local.get_run(run["id"])["state"] == "succeeded"

        down = af_stack(home, "down")
        assert down.returncode == 0, down.stderr
        assert "killed" not in down.stderr, down.stderr
        assert [pid for pid in pids if not gone(pid)] == []
        assert not (home / "stack.json").exists()

        after = af_stack(home, "status", "--output", "json")
        assert after.returncode == 0
        assert json.loads(after.stdout)["running"] is False
    finally:
        clean_up(home, pids)


def test_up_with_the_local_model_serves_it_through_the_gateway_and_status_shows_it_healthy(home: Path) -> None:
    pids: list[int] = []
    try:
        up = af_stack(home, "up", "--workers", "0", "--local-model", "--detach")
        pids = recorded_pids(home)
        assert up.returncode == 0, up.stderr
        report = json.loads(af_stack(home, "status", "--output", "json").stdout)
        assert [p["name"] for p in report["parts"]] == ["nats-server", "postgres", "local-model", "control-plane"]
        (model,) = [p for p in report["parts"] if p["name"] == "local-model"]
        assert model["alive"] is True and model["healthy"] is True, report
        assert report["local_model_url"].startswith("http://127.0.0.1:")
        (row,) = [line for line in af_stack(home, "status").stdout.splitlines() if "local-model" in line]
        assert row.split()[-2:] == ["running,", "healthy"], row

        token = (home / "admin.key").read_text().strip()
        answer = httpx.post(
            f"{report['api_url']}/v1/llm/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        completion = answer.json()
        assert completion["model"] == "local" and completion["choices"][0]["message"]["content"].strip()
        assert 0 < completion["usage"]["completion_tokens"] <= 8

        down = af_stack(home, "down")
        assert down.returncode == 0 and "killed" not in down.stderr, down.stderr
        assert [pid for pid in pids if not gone(pid)] == []
    finally:
        clean_up(home, pids)


def test_af_local_model_is_0_or_1() -> None:
    assert StackSettings.read({"AF_HOME": "/x", "AF_LOCAL_MODEL": "1"}).local_model is True
    assert StackSettings.read({"AF_HOME": "/x"}).local_model is False
    with pytest.raises(StackError, match="AF_LOCAL_MODEL: use 0 or 1, got 'yes'"):
        StackSettings.read({"AF_HOME": "/x", "AF_LOCAL_MODEL": "yes"})


def test_status_and_down_without_a_stack_say_so(home: Path) -> None:
    status = af_stack(home, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == f"no stack is running from {home}\n"

    down = af_stack(home, "down")
    assert down.returncode == 0, down.stderr
    assert down.stderr.splitlines() == [f"no stack is recorded in {home}", "nothing was running"]
