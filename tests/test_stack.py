"""The embedded stack as a user runs it: `up --detach`, `status`, a run through the SDK, `down`, each a real
process with AF_HOME in a fresh directory; every process it started is gone afterwards, whatever failed. With
`--local-model`, the local model server is one more of its processes, and the gateway's `local` model answers."""

import asyncio
import json
import os
import pwd
import signal
import time
from pathlib import Path

import httpx
import pytest
from agentflow import Client

from bus import connect, subjects
from control_plane.stack import nats_identity
from control_plane.stack.processes import StackError
from control_plane.stack.settings import StackSettings
from tests.conftest import Embedded, gone
from worker.settings import default_worker_id

PART_NAMES = ["nats-server", "postgres", "control-plane", "worker-1", "worker-2"]


def test_up_status_run_and_down_start_and_stop_every_part(embedded: Embedded, monkeypatch: pytest.MonkeyPatch) -> None:
    home = embedded.home
    up = embedded("up", "--workers", "2", "--detach")
    pids = list(embedded.pids().values())
    assert up.returncode == 0, up.stderr
    assert up.stdout == ""
    assert "AgentFlow is up" in up.stderr

    state = embedded.state
    assert [part["name"] for part in state["parts"]] == PART_NAMES
    assert state["api_url"].startswith("http://127.0.0.1:")
    for part in state["parts"]:
        assert not gone(part["pid"]), part
        assert Path(part["log"]).is_file(), part

    status = embedded("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["running"] is True
    assert report["api_ready"] is True
    assert report["api_url"] == state["api_url"]
    assert [(p["name"], p["pid"], p["alive"]) for p in report["parts"]] == [
        (part["name"], part["pid"], True) for part in state["parts"]
    ]

    again = embedded("up", "--workers", "1", "--detach")
    assert again.returncode == 1
    assert again.stderr.splitlines() == [
        f"af: a stack is already running from {home} (af status shows it; af down stops it)"
    ]
    assert list(embedded.pids().values()) == pids, "a refused up must leave the running stack alone"

    assert (home / "master.key").stat().st_mode & 0o777 == 0o600, "the secrets' master key, its owner's only"
    token = (home / "admin.key").read_text().strip()
    with Client(api_url=state["api_url"], token=token) as af:
        run = af.start_run(tool="noop", input={"from": "the embedded stack"})
        final = af.wait_run(run["id"], timeout=60)
        assert final["state"] == "succeeded", final
        assert final["output"] == {"from": "the embedded stack"}
        workers = {w["id"] for w in af.list_workers()}
    assert final["tasks"][0]["worker_id"] in workers
    # Named as `af worker start` names a worker: <host>-<pid>, the PID af status shows.
    assert workers == {default_worker_id(part["pid"]) for part in state["parts"][3:]}

    # With only AF_HOME set, the SDK finds the local stack's API and admin key by itself.
    for name in ("AF_API_URL", "AF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AF_HOME", str(home))
    with Client() as local:
        assert (local.settings.api_url, local.settings.token) == (state["api_url"], token)
        assert local.get_run(run["id"])["state"] == "succeeded"

    down = embedded("down")
    assert down.returncode == 0, down.stderr
    assert "killed" not in down.stderr, down.stderr
    assert [pid for pid in pids if not gone(pid)] == []
    assert not (home / "stack.json").exists()
    for part in state["parts"]:
        assert "disconnected from NATS" not in Path(part["log"]).read_text(), part["name"]

    after = embedded("status", "--output", "json")
    assert after.returncode == 0
    assert json.loads(after.stdout)["running"] is False


def test_status_and_down_without_a_stack_say_so(embedded: Embedded) -> None:
    status = embedded("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout == f"no stack is running from {embedded.home}\n"

    down = embedded("down")
    assert down.returncode == 0, down.stderr
    assert down.stderr == f"no stack was running from {embedded.home}\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when we are root")
def test_a_private_home_that_postgres_cannot_enter_gets_its_cluster_in_a_directory_down_deletes(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)  # what `mktemp -d` makes: nobody but root may enter
    embedded = Embedded(tmp_path / "home")
    home = embedded.home
    try:
        up = embedded("up", "--workers", "0", "--detach")
        assert up.returncode == 0, up.stderr
        [cluster] = [Path(directory) for directory in embedded.state["temporary"]]
        assert f"data in {cluster}, deleted by af down (nobody cannot enter {home})" in up.stderr
        assert cluster.stat().st_uid == pwd.getpwnam("nobody").pw_uid
        assert (cluster / "PG_VERSION").is_file()
        assert not (home / "postgres").exists()

        status = embedded("status", "--output", "json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["api_ready"] is True

        down = embedded("down")
        assert down.returncode == 0, down.stderr
        assert not cluster.exists()
        assert [pid for pid in embedded.seen if not gone(pid)] == []
    finally:
        embedded.stop_all()


def test_af_up_restarts_the_parts_killed_by_kill_9_and_af_status_fails_while_one_is_down(
    embedded: Embedded,
) -> None:
    up = embedded("up", "--workers", "1", "--detach")
    assert up.returncode == 0, up.stderr
    before = embedded.pids()
    api_url = embedded.state["api_url"]
    for name in ("control-plane", "worker-1"):
        os.kill(before[name], signal.SIGKILL)
    for name in ("control-plane", "worker-1"):
        while not gone(before[name]):
            time.sleep(0.05)

    status = embedded("status")
    assert status.returncode == 1, status.stdout
    assert "control-plane" in status.stdout and "exited" in status.stdout
    assert "af up starts again what exited" in status.stderr

    unreachable = embedded.af("tool", "ls")
    assert unreachable.returncode == 3
    assert "af up starts it or what exited" in unreachable.stderr

    repaired = embedded("up", "--detach")
    assert repaired.returncode == 0, repaired.stderr
    assert "Restarting the parts" in repaired.stderr
    after = embedded.pids()
    assert after["nats-server"] == before["nats-server"] and after["postgres"] == before["postgres"]
    assert after["control-plane"] != before["control-plane"] and after["worker-1"] != before["worker-1"]
    assert embedded.state["api_url"] == api_url

    status = embedded("status", "--output", "json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["api_ready"] is True and all(part["alive"] for part in report["parts"])
    with Client(api_url=api_url, token=(embedded.home / "admin.key").read_text().strip()) as af:
        run = af.start_run(tool="noop", input={"after": "repair"})
        assert af.wait_run(run["id"], timeout=60)["state"] == "succeeded"

    down = embedded("down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in embedded.seen if not gone(pid)] == []


def test_up_with_the_local_model_serves_it_through_the_gateway_and_status_shows_it_healthy(
    embedded: Embedded,
) -> None:
    up = embedded("up", "--workers", "0", "--local-model", "--detach")
    assert up.returncode == 0, up.stderr
    report = json.loads(embedded("status", "--output", "json").stdout)
    assert [p["name"] for p in report["parts"]] == ["nats-server", "postgres", "local-model", "control-plane"]
    (model,) = [p for p in report["parts"] if p["name"] == "local-model"]
    assert model["alive"] is True and model["healthy"] is True, report
    assert report["local_model_url"].startswith("http://127.0.0.1:")
    (row,) = [line for line in embedded("status").stdout.splitlines() if "local-model" in line]
    assert row.split()[-2:] == ["running,", "healthy"], row

    # Killed, it is started again by `af up` on its port: the control plane's AF_LOCAL_MODEL_URL still holds.
    os.kill(model["pid"], signal.SIGKILL)
    while not gone(model["pid"]):
        time.sleep(0.05)
    repaired = embedded("up", "--detach")
    assert repaired.returncode == 0, repaired.stderr
    assert embedded.state["local_model_url"] == report["local_model_url"]

    answer = httpx.post(
        f"{report['api_url']}/v1/llm/chat/completions",
        json={"model": "local", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8},
        headers={"Authorization": f"Bearer {(embedded.home / 'admin.key').read_text().strip()}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    completion = answer.json()
    assert completion["model"] == "local" and completion["choices"][0]["message"]["content"].strip()
    assert 0 < completion["usage"]["completion_tokens"] <= 8

    down = embedded("down")
    assert down.returncode == 0 and "killed" not in down.stderr, down.stderr
    assert [pid for pid in embedded.seen if not gone(pid)] == []


def test_af_local_model_is_0_or_1() -> None:
    assert StackSettings.read({"AF_HOME": "/x", "AF_LOCAL_MODEL": "1"}).local_model is True
    assert StackSettings.read({"AF_HOME": "/x"}).local_model is False
    with pytest.raises(StackError, match="AF_LOCAL_MODEL: use 0 or 1, got 'yes'"):
        StackSettings.read({"AF_HOME": "/x", "AF_LOCAL_MODEL": "yes"})


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when we are root")
def test_a_cluster_already_in_a_home_postgres_cannot_enter_stops_af_up_before_it_starts_anything(
    tmp_path: Path,
) -> None:
    tmp_path.chmod(0o700)
    embedded = Embedded(tmp_path / "home")
    (embedded.home / "postgres").mkdir(parents=True)
    (embedded.home / "postgres" / "PG_VERSION").write_text("16\n")
    try:
        up = embedded("up", "--workers", "0", "--detach")
        assert up.returncode == 1
        assert up.stderr.splitlines() == [
            f"af: PostgreSQL runs as nobody, who cannot enter {embedded.home} where its cluster is: let it"
            f" (chmod o+x {embedded.home} and each directory above it) or choose another AF_HOME"
        ]
        assert not (embedded.home / "stack.json").exists()
    finally:
        embedded.stop_all()


def test_up_with_a_nats_cluster_runs_three_nodes_whose_streams_have_three_replicas(
    embedded: Embedded,
) -> None:
    up = embedded("up", "--workers", "1", "--nats-cluster", "3", "--detach")
    assert up.returncode == 0, up.stderr
    assert "NATS cluster (3 nodes)" in up.stderr
    before = embedded.pids()
    assert [name for name in before if name.startswith("nats-")] == ["nats-node-0", "nats-node-1", "nats-node-2"]
    assert len(embedded.state["nats_url"].split(",")) == 3
    assert "AF_NATS_REPLICAS" not in embedded.env, "af up asks for the replicas itself"

    replicas = asyncio.run(stream_replicas(embedded.home, embedded.state["nats_url"]))
    assert replicas == 3
    # A node killed and runs carrying on with two of three: tests/test_nats_cluster.py (on the embedded stack a
    # run right after a node's kill has stalled past 90 s: open in the cluster issue).
    api_url, token = embedded.state["api_url"], (embedded.home / "admin.key").read_text().strip()
    with Client(api_url=api_url, token=token) as af:
        run = af.start_run(tool="noop", input={"on": "three nodes"})
        assert af.wait_run(run["id"], timeout=90)["state"] == "succeeded"

    down = embedded("down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in embedded.seen if not gone(pid)] == []


async def stream_replicas(home: Path, urls: str) -> int:
    """The tasks stream's configured replicas, asked as the stack's admin."""
    identities = nats_identity.Identities.load(home / "nats")
    bus = await connect(",".join(identities.url(url) for url in urls.split(",")), "test-stack-cluster")
    try:
        return (await bus.jetstream.stream_info(subjects.TASKS_STREAM)).config.num_replicas
    finally:
        await bus.close()


def test_up_with_two_control_planes_serves_the_api_on_each_and_restarts_a_killed_one(embedded: Embedded) -> None:
    up = embedded("up", "--workers", "1", "--control-planes", "2", "--detach")
    assert up.returncode == 0, up.stderr
    before = embedded.pids()
    assert "control-plane" in before and "control-plane-2" in before
    second = next(part for part in embedded.state["parts"] if part["name"] == "control-plane-2")
    urls = [embedded.state["api_url"], second["health"].removesuffix("/readyz")]
    leaders = ["agentflow_control_plane_leader 1.0" in httpx.get(f"{url}/metrics").text for url in urls]
    assert leaders == [True, False]
    token = (embedded.home / "admin.key").read_text().strip()
    for url in urls:
        with Client(api_url=url, token=token) as af:
            run = af.start_run(tool="noop", input={"through": url})
            assert af.wait_run(run["id"], timeout=60)["state"] == "succeeded"

    os.kill(before["control-plane-2"], signal.SIGKILL)
    while not gone(before["control-plane-2"]):
        time.sleep(0.05)
    status = embedded("status", "--output", "json")
    assert status.returncode == 1
    repaired = embedded("up", "--detach")
    assert repaired.returncode == 0, repaired.stderr
    assert embedded.pids()["control-plane-2"] != before["control-plane-2"]
    again = next(part for part in embedded.state["parts"] if part["name"] == "control-plane-2")
    assert again["health"] == second["health"], "started again on its port"
    report = json.loads(embedded("status", "--output", "json").stdout)
    assert all(part["alive"] for part in report["parts"])
    assert next(p for p in report["parts"] if p["name"] == "control-plane-2")["healthy"] is True

    down = embedded("down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in embedded.seen if not gone(pid)] == []


def test_up_refuses_a_count_of_control_planes_out_of_range(embedded: Embedded) -> None:
    refused = embedded("up", "--control-planes", "0", "--detach")
    assert refused.returncode != 0
    assert "--control-planes must be 1 to 5" in refused.stderr
