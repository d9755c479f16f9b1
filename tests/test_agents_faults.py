"""An agent's loop survives a SIGKILL of any of its processes in the middle of it, and repeats nothing that
finished: each model turn is called once (one successful gateway call per turn), each tool call applied
once (the tool itself writes a line to a ledger when it finishes). A cancelled agent run stops its model
call in flight and kills its tool call's sandbox.

Each test has its own NATS, PostgreSQL, control plane and two workers (process sandbox, so the tools can
write the ledger on the host), with a short ack wait so a dead worker's task is redelivered within three seconds.
"""

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import Stack, gone, isolated_stack

LEDGER_TOOL = """import json, os, sys, time
arguments = json.load(sys.stdin)
time.sleep(1.0)
with open({ledger!r}, "a") as ledger:
    ledger.write(os.environ["AF_TASK_ID"] + "\\n")
print(json.dumps({{"counted": arguments["n"]}}))
"""
T = TypeVar("T")
TURNS = [
    {"tool_calls": [{"name": "count", "arguments": {"n": 1}}]},
    {"tool_calls": [{"name": "count", "arguments": {"n": 2}}]},
    {"tool_calls": [{"name": "count", "arguments": {"n": 3}}]},
    {"content": "counted to three"},
]


@pytest.fixture
def agent_stack(tmp_root: Path) -> Iterator[Stack]:
    with isolated_stack(tmp_root, durable=True, AF_ACK_WAIT_SECONDS="3", AF_MODEL_TURN_SECONDS="20") as running:
        for _ in range(2):
            running.start_worker(concurrency=4, AF_SANDBOX="process")
        yield running


def _apply_agent(stack: Stack, name: str, source: str, turns: list[dict[str, Any]], latency_ms: float = 0.0) -> None:
    """Agent ``name`` with the one tool ``count`` (a Python ``source``) and a mock model scripted ``turns``."""
    with stack.client() as af:
        af.register_tool(
            {
                "name": "count",
                "version": "1",
                "description": "Counts",
                "runtime": {"command": ["python3", "main.py"], "files": {"main.py": source}},
                "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
            }
        )
        model = f"{name}-model"
        af.apply_model({"name": model, "provider": "mock", "options": {"turns": turns, "latency_ms": latency_ms}})
        af.apply_agent({"name": name, "version": "1", "instructions": "Count.", "model": model, "tools": ["count"]})


def _counter_agent(stack: Stack, latency_ms: float = 0.0) -> Path:
    """The ``counter`` agent: three turns that each call the one-second ``count`` tool, then an answer."""
    ledger = stack.root / "ledger.txt"
    ledger.touch()
    _apply_agent(stack, "counter", LEDGER_TOOL.format(ledger=str(ledger)), TURNS, latency_ms)
    return ledger


def _started(stack: Stack, agent: str = "counter") -> str:
    with stack.client() as af:
        return str(af.start_run(agent=agent, input="count to three")["id"])


def _until(what: str, check: Callable[[], T]) -> T:
    """Poll ``check`` until it returns something truthy (within a minute)."""
    deadline = time.monotonic() + 60
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)
    return value


def _wait_for(stack: Stack, run_id: str, step: str) -> dict[str, Any]:
    """The task of ``step`` once a worker has started it."""

    def running() -> dict[str, Any] | None:
        with stack.client() as af:
            task = next((t for t in af.get_run(run_id)["tasks"] if t["step"] == step), None)
        return task if task is not None and task["state"] == "running" and task.get("worker_id") else None

    return _until(f"{step} of run {run_id} to run", running)


def _assert_nothing_finished_was_repeated(stack: Stack, run_id: str, ledger: Path) -> None:
    with stack.client() as af:
        final = af.wait_run(run_id, timeout=90)
        assert final["state"] == "succeeded", (final["error"], [(t["step"], t["state"]) for t in final["tasks"]])
        assert final["output"] == "counted to three"
        steps = {task["step"]: task for task in final["tasks"]}
        assert sorted(steps) == sorted(
            ["turn-1", "turn-1/call-0", "turn-2", "turn-2/call-0", "turn-3", "turn-3/call-0", "turn-4"]
        )
        calls = af.llm_calls(run_id)
    answered = Counter(call["turn"] for call in calls if call["outcome"] == "ok")
    assert answered == {1: 1, 2: 1, 3: 1, 4: 1}, [(c["turn"], c["outcome"], c["error"]) for c in calls]
    applied = Counter(ledger.read_text().split())
    tool_tasks = {steps[f"turn-{n}/call-0"]["id"] for n in (1, 2, 3)}
    assert applied == dict.fromkeys(tool_tasks, 1), applied
    for n in (1, 2, 3):
        assert json.loads(steps[f"turn-{n + 1}"]["input"]["body"]["messages"][-1]["content"]) == {"counted": n}


def _kill_worker_of(stack: Stack, task: dict[str, Any]) -> None:
    worker = stack.workers[task["worker_id"]]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()


def test_a_sigkill_of_the_control_plane_mid_loop_repeats_no_model_call_and_no_tool_call(agent_stack: Stack) -> None:
    ledger = _counter_agent(agent_stack)
    run_id = _started(agent_stack)
    _wait_for(agent_stack, run_id, "turn-2/call-0")
    agent_stack.kill_control_plane()
    time.sleep(1.0)  # the tool call finishes meanwhile: its result waits in the stream
    agent_stack.start_control_plane()
    _assert_nothing_finished_was_repeated(agent_stack, run_id, ledger)


def test_a_sigkill_of_the_control_plane_mid_model_call_has_the_turn_tried_again_soon(agent_stack: Stack) -> None:
    # The worker hears nothing more from the dead control plane (no "still working" every two seconds) and
    # tries the turn again; the killed call was never answered, so calling the model again repeats nothing.
    ledger = _counter_agent(agent_stack, latency_ms=3000)
    run_id = _started(agent_stack)
    _wait_for(agent_stack, run_id, "turn-2")
    agent_stack.kill_control_plane()
    agent_stack.start_control_plane()
    _assert_nothing_finished_was_repeated(agent_stack, run_id, ledger)
    with agent_stack.client() as af:
        retried = [e["data"] for e in af.events(run_id) if e["type"] == "task.retrying"]
    # Noticed by the silence, not at the end of the turn's 20 s (AF_MODEL_TURN_SECONDS).
    assert [(e["step"], e["error"]) for e in retried] == [
        ("turn-2", "the control plane answering the turn went silent")
    ]


def test_a_sigkill_of_the_worker_running_a_tool_call_repeats_no_finished_call(agent_stack: Stack) -> None:
    ledger = _counter_agent(agent_stack)
    run_id = _started(agent_stack)
    _kill_worker_of(agent_stack, _wait_for(agent_stack, run_id, "turn-2/call-0"))
    _assert_nothing_finished_was_repeated(agent_stack, run_id, ledger)


def test_a_sigkill_of_the_worker_making_a_model_call_does_not_call_the_model_again(agent_stack: Stack) -> None:
    # Each answer takes 5 s: the turn is redelivered (after the 3 s ack wait) while the gateway still
    # waits for the model, and must wait for that call rather than make a second one.
    ledger = _counter_agent(agent_stack, latency_ms=5000)
    run_id = _started(agent_stack)
    _kill_worker_of(agent_stack, _wait_for(agent_stack, run_id, "turn-2"))
    _assert_nothing_finished_was_repeated(agent_stack, run_id, ledger)


# --- cancelling ------------------------------------------------------------------------------------

SLEEPER_TOOL = """import os, time
with open({pids!r}, "a") as pids:
    pids.write(str(os.getpid()) + "\\n")
time.sleep(120)
"""


def _cancelled(stack: Stack, run_id: str) -> dict[str, Any]:
    with stack.client() as af:
        af.cancel_run(run_id)
        final = af.wait_run(run_id, timeout=30)
    assert final["state"] == "cancelled", final
    return final


def test_a_cancelled_agent_run_stops_its_model_call_in_flight(agent_stack: Stack) -> None:
    _apply_agent(agent_stack, "ponderer", "print('{}')", [{"content": "at last"}], latency_ms=60_000)
    run_id = _started(agent_stack, "ponderer")
    _wait_for(agent_stack, run_id, "turn-1")
    final = _cancelled(agent_stack, run_id)
    assert [(t["step"], t["state"]) for t in final["tasks"]] == [("turn-1", "cancelled")]
    with agent_stack.client() as af:
        # Recorded once stopped, well before the model's minute is up.
        (call,) = _until("the stopped call's record", lambda: af.llm_calls(run_id))
    assert (call["turn"], call["outcome"], call["error"]) == (1, "cancelled", "the run was cancelled")


def test_a_cancelled_agent_run_kills_the_sandbox_of_its_tool_call(agent_stack: Stack) -> None:
    pids = agent_stack.root / "pids.txt"
    pids.touch()
    turns = [{"tool_calls": [{"name": "count", "arguments": {"n": 1}}]}, {"content": "never"}]
    _apply_agent(agent_stack, "napper", SLEEPER_TOOL.format(pids=str(pids)), turns)
    run_id = _started(agent_stack, "napper")
    _wait_for(agent_stack, run_id, "turn-1/call-0")
    pid = int(_until("the tool's pid", lambda: pids.read_text().strip()))
    final = _cancelled(agent_stack, run_id)
    steps = [(t["step"], t["state"]) for t in final["tasks"]]
    assert steps == [("turn-1", "succeeded"), ("turn-1/call-0", "cancelled")]
    _until("the tool killed", lambda: gone(pid))
    with agent_stack.client() as af:
        assert [call["turn"] for call in af.llm_calls(run_id)] == [1]  # no turn after the cancel
