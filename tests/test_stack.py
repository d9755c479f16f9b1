"""The embedded stack as a user runs it: `up --detach`, `status`, a run through the SDK, `down`, each a real
process with AF_HOME in a fresh directory; every process it started is gone afterwards, whatever failed."""

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentflow import Client

from control_plane.stack.processes import free_port, stop
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
        if (home / "stack.json").exists():
            pids = pids or recorded_pids(home)
            af_stack(home, "down")
        for pid in pids:
            if not gone(pid):
                stop(pid, timeout=10)


def test_status_and_down_without_a_stack_say_so(home: Path) -> None:
    status = af_stack(home, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == f"no stack is running from {home}\n"

    down = af_stack(home, "down")
    assert down.returncode == 0, down.stderr
    assert down.stderr.splitlines() == [f"no stack is recorded in {home}", "nothing was running"]


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when we are root")
def test_a_private_home_that_postgres_cannot_enter_gets_its_cluster_in_a_directory_down_deletes(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)  # what `mktemp -d` makes: nobody but root may enter
    home = tmp_path / "home"
    pids: list[int] = []
    try:
        up = af_stack(home, "up", "--workers", "0", "--detach")
        pids = recorded_pids(home)
        assert up.returncode == 0, up.stderr
        state = json.loads((home / "stack.json").read_text())
        [cluster] = [Path(directory) for directory in state["temporary"]]
        assert f"data in {cluster}, deleted by af down (nobody cannot enter {home})" in up.stderr
        assert cluster.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert (cluster / "PG_VERSION").is_file()
        assert not (home / "postgres").exists()

        status = af_stack(home, "status", "--output", "json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["api_ready"] is True

        down = af_stack(home, "down")
        assert down.returncode == 0, down.stderr
        assert not cluster.exists()
        assert [pid for pid in pids if not gone(pid)] == []
    finally:
        if (home / "stack.json").exists():
            af_stack(home, "down")
        for pid in pids:
            if not gone(pid):
                stop(pid, timeout=10)
