"""Faults: retries, poison tasks, and processes killed with SIGKILL while runs are in flight.

Tests that kill a server get their own NATS, PostgreSQL and control plane (``own_stack``), so the
session's stack is never disturbed. Every process is stopped by PID at the end.
"""

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from agentflow import Client, ValidationFailed, WaitTimeout

from bus import connect, subjects
from control_plane.stack.processes import stop
from tests.conftest import Stack, wait_until_pulled

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


def test_a_workflow_step_can_override_its_tools_retry_policy(client: Client) -> None:
    _tool(client, "flaky-no-retry", FLAKY)
    client.apply_workflow(
        {
            "name": "retries-per-step",
            "version": "1.0.0",
            "kind": "dag",
            "steps": [
                {"name": "flaky", "tool": "flaky-no-retry", "retry": {"max_attempts": 4, "backoff_seconds": 0.05}}
            ],
        }
    )
    final = client.wait_run(client.start_run(workflow="retries-per-step", input={})["id"], timeout=60)
    assert final["state"] == "succeeded"
    assert final["tasks"][0]["attempt"] == 3
    alone = client.wait_run(client.start_run(tool="flaky-no-retry", input={})["id"], timeout=60)
    assert alone["state"] == "failed"
    assert alone["tasks"][0]["attempt"] == 1


def test_a_malformed_step_retry_policy_is_refused_with_its_field(client: Client) -> None:
    with pytest.raises(ValidationFailed) as raised:
        client.apply_workflow(
            {
                "name": "bad-retry",
                "version": "1.0.0",
                "kind": "dag",
                "steps": [{"name": "a", "tool": "noop", "retry": {"max_attempts": 0}}],
            }
        )
    assert raised.value.field == "steps[0].retry.max_attempts"


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


async def test_a_task_is_redelivered_when_its_worker_dies(stack: Stack, client: Client) -> None:
    _tool(client, "slow", "import time\ntime.sleep(2.0)\nprint('{\"done\": true}')\n")
    first = stack.start_worker(queue="crashy", concurrency=1, AF_ACK_WAIT_SECONDS="2")
    run = client.start_run(tool="slow", input={}, queue="crashy")
    bus = await connect(stack.nats_url, "test-faults")
    try:
        await wait_until_pulled(bus.jetstream, "crashy")  # the first worker holds the task now
    finally:
        await bus.close()
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
def fan_stack(own_stack: Stack) -> Stack:
    with own_stack.client() as af:
        _tool(af, "nap", NAP)
        af.apply_workflow(FAN)
    return own_stack


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


@pytest.mark.parametrize(
    ("kill", "restart"),
    [
        (Stack.kill_control_plane, Stack.start_control_plane),
        (Stack.kill_nats, Stack.restart_nats),
        (Stack.kill_postgres, Stack.restart_postgres),
    ],
    ids=["control-plane", "nats-server", "postgres"],
)
def test_runs_in_flight_survive_a_sigkill_of(
    fan_stack: Stack, kill: Callable[[Stack], None], restart: Callable[[Stack], None]
) -> None:
    with fan_stack.client() as af:
        run_ids = [af.start_run(workflow="fan-sleep", input={"n": i})["id"] for i in range(5)]
    time.sleep(0.6)
    kill(fan_stack)
    time.sleep(1.0)  # work and results pile up meanwhile
    restart(fan_stack)
    with fan_stack.client() as af:
        _assert_every_task_applied_once(af, run_ids, fan_stack.root)


def test_readyz_reports_not_ready_while_postgres_is_down(own_stack: Stack) -> None:
    own_stack.kill_postgres()
    try:
        down = httpx.get(f"{own_stack.api_url}/readyz", timeout=10)
        assert down.status_code == 503
        assert down.json()["checks"]["postgres"] != "ok"
        assert down.json()["checks"]["nats"] == "ok"
    finally:
        own_stack.restart_postgres()
    deadline = time.monotonic() + 30
    while httpx.get(f"{own_stack.api_url}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "still not ready after PostgreSQL came back"
        time.sleep(0.2)


def test_a_task_no_worker_starts_in_time_fails_as_a_schedule_to_start_timeout(client: Client) -> None:
    _tool(
        client,
        "must-start-soon",
        "print('{}')\n",
        limits={"schedule_to_start_seconds": 1.0},
        retry={"max_attempts": 2, "backoff_seconds": 0.05},
    )
    final = client.wait_run(
        client.start_run(tool="must-start-soon", input={}, queue="nobody-pulls-this")["id"], timeout=60
    )
    assert final["state"] == "failed"
    (task,) = final["tasks"]
    assert task["state"] == "dead"
    assert task["attempt"] == 2
    assert "schedule-to-start" in final["error"]
    types = [e["type"] for e in client.events(final["id"])]
    assert types.count("task.retrying") == 1


def test_a_started_task_is_not_timed_out_by_its_schedule_to_start_deadline(client: Client) -> None:
    _tool(
        client,
        "starts-then-naps",
        "import time\ntime.sleep(2.5)\nprint('{}')\n",
        limits={"schedule_to_start_seconds": 1.5},
    )
    final = client.wait_run(client.start_run(tool="starts-then-naps", input={})["id"], timeout=60)
    assert final["state"] == "succeeded", final


def test_a_dead_workers_task_is_retried_at_once_as_its_next_attempt(stack: Stack, client: Client) -> None:
    """kill -9 of the worker running a task: when its heartbeat expires the task runs again as attempt 2 (a
    new message, not the old one redelivered after the ack wait), and finishes once. The worker is killed as
    soon as the task is running, so the control plane knows it held the task from its start notice."""
    _tool(client, "naps-2s", "import time\ntime.sleep(2.0)\nprint('{\"done\": true}')\n")
    workers = {}
    for _ in range(2):
        process = stack.start_worker(queue="lost", concurrency=1)
        workers[f"test-lost-{len(stack.processes) - 1}"] = process
    run = client.start_run(tool="naps-2s", input={}, queue="lost")
    deadline = time.monotonic() + 30
    while (task := client.get_run(run["id"])["tasks"][0])["state"] != "running":
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.05)
    holder = workers.pop(task["worker_id"])  # killed at once: its heartbeat may not list the task yet
    killed_at = time.time()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    try:
        final = client.wait_run(run["id"], timeout=90)
    finally:
        for process in workers.values():
            stop(process.pid)
    (task,) = final["tasks"]
    recovery = datetime.fromisoformat(task["started_at"]).timestamp() - killed_at
    print(f"\nrecovery (kill -9 -> the task's next start): {recovery:.1f} s")
    assert final["state"] == "succeeded"
    assert task["attempt"] == 2
    assert task["detail"]["deliveries"] == 1
    events = _events(client, run["id"])
    assert [e["type"] for e in events].count("task.succeeded") == 1
    (retrying,) = [e for e in events if e["type"] == "task.retrying"]
    assert "heartbeat" in retrying["data"]["error"]
    # The old attempt's message was withdrawn: nothing of the queue is left to be redelivered.
    assert asyncio.run(_left_in_stream(stack.nats_url, subjects.tasks("default", "lost"))) == 0


async def _left_in_stream(nats_url: str, subject: str) -> int:
    bus = await connect(nats_url, "test-faults")
    try:
        info = await bus.jetstream.stream_info(subjects.TASKS_STREAM, subjects_filter=subject)
        return (info.state.subjects or {}).get(subject, 0)
    finally:
        await bus.close()
