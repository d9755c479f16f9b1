"""Faults: retries, poison tasks, and processes killed with SIGKILL while runs are in flight.

Tests that kill a server get their own NATS, PostgreSQL and control plane (``own_stack``), so the
session's stack is never disturbed. Every process is stopped by PID at the end.
"""

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from agentflow import Client, WaitTimeout

from control_plane.embedded.processes import stop
from tests.conftest import Stack, start_nats, start_postgres

# Fails with the "retryable" exit code (75) until its third attempt.
FLAKY = """import os, sys
attempt = int(os.environ["AF_ATTEMPT"])
if attempt < 3:
    sys.exit(75)
print('{"attempt": %d}' % attempt)
"""


def _tool(client: Client, name: str, source: str, **extra: object) -> None:
    spec = {
        "name": name,
        "version": "1.0.0",
        "runtime": {"command": ["python3", "main.py"], "files": {"main.py": source}},
    }
    client.register_tool({**spec, **extra})


def _events(client: Client, run_id: str) -> list[dict[str, object]]:
    return list(client.events(run_id))


def test_a_retryable_failure_is_tried_again_until_it_succeeds(client: Client) -> None:
    _tool(client, "flaky", FLAKY, retry={"max_attempts": 5, "backoff_seconds": 0.05})
    final = client.wait_run(client.start_run(tool="flaky", input={})["id"], timeout=60)
    assert final["state"] == "succeeded"
    assert final["output"] == {"attempt": 3}
    assert final["tasks"][0]["attempt"] == 3
    types = [e["type"] for e in _events(client, final["id"])]
    assert types.count("task.retrying") == 2


def test_a_poison_task_ends_dead_after_its_attempts_and_does_not_block_the_queue(client: Client) -> None:
    _tool(client, "poison", "import sys\nsys.exit(75)\n", retry={"max_attempts": 3, "backoff_seconds": 0.05})
    poisoned = client.start_run(tool="poison", input={}, queue="poison")
    stack_worker_queue_free = client.start_run(tool="noop", input={"after": "poison"}, queue="poison")
    final = client.wait_run(poisoned["id"], timeout=60)
    assert final["state"] == "failed"
    (task,) = final["tasks"]
    assert task["state"] == "dead"
    assert task["attempt"] == 3
    assert "gave up after 3 attempts" in final["error"]
    assert client.wait_run(stack_worker_queue_free["id"], timeout=30)["state"] == "succeeded"


@pytest.fixture(scope="module", autouse=True)
def poison_queue_worker(stack: Stack) -> Iterator[None]:
    process = stack.start_worker(queue="poison")
    yield
    stop(process.pid)


def test_a_failure_that_is_not_retryable_is_not_retried(client: Client) -> None:
    _tool(client, "exits-3", "import sys\nsys.exit(3)\n", retry={"max_attempts": 4, "backoff_seconds": 0.05})
    final = client.wait_run(client.start_run(tool="exits-3", input={})["id"], timeout=30)
    assert final["state"] == "failed"
    assert final["tasks"][0]["attempt"] == 1
    assert final["tasks"][0]["state"] == "failed"


def test_a_task_is_redelivered_when_its_worker_dies(stack: Stack, client: Client) -> None:
    _tool(client, "slow", "import time\ntime.sleep(2.0)\nprint('{\"done\": true}')\n")
    first = stack.start_worker(queue="crashy", concurrency=1, AF_ACK_WAIT_SECONDS="2")
    run = client.start_run(tool="slow", input={}, queue="crashy")
    time.sleep(0.8)  # the first worker holds the task now
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    second = stack.start_worker(queue="crashy", concurrency=1, AF_ACK_WAIT_SECONDS="2")
    try:
        final = client.wait_run(run["id"], timeout=60)
    finally:
        stop(second.pid)
    assert final["state"] == "succeeded"
    (task,) = final["tasks"]
    assert task["detail"]["deliveries"] == 2
    assert task["worker_id"].startswith("test-crashy-")


# --- killing servers -------------------------------------------------------------------------------

FAN = {
    "name": "fan-sleep",
    "version": "1.0.0",
    "kind": "dag",
    "steps": [
        {"name": "a", "tool": "nap"},
        {"name": "b1", "tool": "nap", "needs": ["a"]},
        {"name": "b2", "tool": "nap", "needs": ["a"]},
        {"name": "b3", "tool": "nap", "needs": ["a"]},
        {"name": "c", "tool": "nap", "needs": ["b1", "b2", "b3"]},
    ],
}
NAP = "import sys, time\ntime.sleep(0.4)\nsys.stdout.write(sys.stdin.read())\n"


@pytest.fixture
def own_stack(tmp_root: Path) -> Iterator[Stack]:
    """NATS, PostgreSQL, a control plane and two workers of this test alone."""
    root = tmp_root / f"own-{time.monotonic_ns()}"
    root.mkdir()
    root.chmod(0o755)
    nats_server = start_nats(root)
    # Durable: these tests kill PostgreSQL, and what it acknowledged must survive that.
    pg = start_postgres(root, durable=True)
    running = Stack(root, nats_server.url, pg.dsn)
    running.nats_server, running.postgres_server = nats_server, pg  # type: ignore[attr-defined]
    try:
        running.start_control_plane()
        running.start_worker(concurrency=4)
        running.start_worker(concurrency=4)
        with running.client() as af:
            _tool(af, "nap", NAP)
            af.apply_workflow(FAN)
        yield running
    finally:
        running.stop_all()
        stop(running.nats_server.process.pid)  # type: ignore[attr-defined]
        stop(running.postgres_server.process.pid, sig=signal.SIGINT)  # type: ignore[attr-defined]


def _assert_every_task_applied_once(af: Client, run_ids: list[str], root: Path) -> None:
    for run_id in run_ids:
        try:
            final = af.wait_run(run_id, timeout=30)
        except WaitTimeout:
            stuck = af.get_run(run_id)
            logs = {p.name: p.read_text(errors="replace")[-1500:] for p in (root / "logs").glob("*.log")}
            pytest.fail(f"run stuck: {[(t['step'], t['state'], t['attempt']) for t in stuck['tasks']]}\n{logs}")
        assert final["state"] == "succeeded", final
        assert sorted(t["step"] for t in final["tasks"]) == ["a", "b1", "b2", "b3", "c"]
        succeeded = Counter(e["data"]["task_id"] for e in af.events(run_id) if e["type"] == "task.succeeded")
        assert set(succeeded.values()) == {1}, succeeded


def test_runs_in_flight_survive_a_control_plane_kill(own_stack: Stack) -> None:
    with own_stack.client() as af:
        run_ids = [af.start_run(workflow="fan-sleep", input={"n": i})["id"] for i in range(6)]
    time.sleep(0.6)
    control_plane = own_stack.processes[0]
    os.kill(control_plane.pid, signal.SIGKILL)
    control_plane.wait()
    time.sleep(1.0)  # results pile up in the stream meanwhile
    own_stack.start_control_plane()
    with own_stack.client() as af:
        _assert_every_task_applied_once(af, run_ids, own_stack.root)


def test_runs_in_flight_survive_a_nats_server_kill(own_stack: Stack) -> None:
    with own_stack.client() as af:
        run_ids = [af.start_run(workflow="fan-sleep", input={"n": i})["id"] for i in range(4)]
    time.sleep(0.6)
    server = own_stack.nats_server  # type: ignore[attr-defined]
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    time.sleep(1.0)
    own_stack.nats_server = start_nats(own_stack.root, port=server.port)  # type: ignore[attr-defined]
    with own_stack.client() as af:
        _assert_every_task_applied_once(af, run_ids, own_stack.root)


def test_runs_in_flight_survive_a_postgres_kill(own_stack: Stack) -> None:
    with own_stack.client() as af:
        run_ids = [af.start_run(workflow="fan-sleep", input={"n": i})["id"] for i in range(4)]
    time.sleep(0.6)
    pg = own_stack.postgres_server  # type: ignore[attr-defined]
    os.kill(pg.process.pid, signal.SIGKILL)
    pg.process.wait()
    time.sleep(1.5)  # its backends notice the postmaster is gone and exit
    own_stack.postgres_server = start_postgres(own_stack.root, port=pg.port, durable=True)  # type: ignore[attr-defined]
    with own_stack.client() as af:
        _assert_every_task_applied_once(af, run_ids, own_stack.root)
