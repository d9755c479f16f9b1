"""The three planners end to end, on the real stack: the example templates, signals, durable timers,
cancellation and compensation."""

import time
from collections import Counter
from typing import Any

import pytest
from agentflow import Client, Conflict, ValidationFailed

from tests.conftest import Stack, register_examples

pytestmark = pytest.mark.usefixtures("examples_registered")

BUG_TICKET = "The upload crashes with an error and a traceback when the file is empty."
QUESTION_TICKET = "How do I change the language of the dashboard? Which option is it?"


def _finished(client: Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    return client.wait_run(run_id, timeout=timeout)


def _steps(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["step"]: task for task in run["tasks"]}


def _wait_for_state(client: Client, run_id: str, step: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _steps(client.get_run(run_id)).get(step, {}).get("state") != state:
        assert time.monotonic() < deadline, f"step {step} never became {state}: {client.get_run(run_id)}"
        time.sleep(0.1)


def test_the_code_review_template_fans_out_and_joins(client: Client) -> None:
    final = _finished(client, client.start_run(workflow="code-review", input={"change": BUG_TICKET})["id"])

    assert final["state"] == "succeeded", final
    assert final["output"]["kind"] == "bug"
    assert set(_steps(final)) == {"stats", "critique", "label", "review"}


@pytest.mark.parametrize(
    ("ticket", "taken", "skipped"), [(BUG_TICKET, "bug", "answer"), (QUESTION_TICKET, "answer", "bug")]
)
def test_the_conditional_template_runs_one_branch_and_skips_the_other(
    client: Client, ticket: str, taken: str, skipped: str
) -> None:
    final = _finished(client, client.start_run(workflow="conditional-triage", input={"ticket": ticket})["id"])

    assert final["state"] == "succeeded", final
    assert taken in _steps(final) and skipped not in _steps(final)
    assert final["output"][skipped] is None and final["output"][taken]["text"]


def test_the_iterative_review_template_loops_until_the_quality_gate_passes(client: Client) -> None:
    final = _finished(client, client.start_run(workflow="iterative-review", input={"draft": "A draft."})["id"])

    assert final["state"] == "succeeded", final
    assert sorted(_steps(final)) == ["refine#1/revise", "refine#1/score", "refine#2/revise", "refine#2/score"]
    assert final["output"]["score"] == {"score": 8, "passed": True, "feedback": "good to go"}
    assert final["output"]["revise"]["text"].startswith("A draft. [rev 1] [rev 2]")


def test_the_bug_resolution_state_machine_loops_back_until_verified(client: Client) -> None:
    final = _finished(client, client.start_run(workflow="bug-resolution", input={"report": BUG_TICKET})["id"])

    assert final["state"] == "succeeded", final
    assert [t["step"] for t in final["tasks"]] == ["reproduce", "fix", "verify", "fix#2", "verify#2"]
    assert final["output"]["score"] == 8


def test_the_research_behavior_tree_falls_back_when_the_primary_source_fails(client: Client) -> None:
    final = _finished(client, client.start_run(workflow="research", input={"topic": "Durable workflows."})["id"])

    assert final["state"] == "succeeded", final
    steps = _steps(final)
    assert steps["primary"]["state"] == "failed" and steps["backup"]["state"] == "succeeded"
    assert final["output"]["words"] > 0


def test_an_approval_waits_for_the_signal_and_publishes_once_approved(client: Client) -> None:
    run_id = client.start_run(workflow="approval", input={"text": "We ship durable timers today."})["id"]
    _wait_for_state(client, run_id, "await_approval", "queued")

    assert client.signal_run(run_id, "approve", {"by": "ana"})["step"] == "await_approval"
    with pytest.raises(Conflict):  # taken once: the run no longer waits for it
        client.signal_run(run_id, "approve", {"by": "ana"})

    final = _finished(client, run_id)
    assert final["state"] == "succeeded", final
    assert final["output"]["approved_by"] == "ana"
    types = [e["type"] for e in client.events(run_id)]
    assert "signal.waiting" in types


def test_a_rejected_approval_fails_the_run_with_the_final_states_error(client: Client) -> None:
    run_id = client.start_run(workflow="approval", input={"text": "We ship it."})["id"]
    _wait_for_state(client, run_id, "await_approval", "queued")
    client.signal_run(run_id, "reject", {"by": "bo"})

    final = _finished(client, run_id)
    assert final["state"] == "failed" and final["error"] == "rejected by the reviewer"


def test_a_signal_the_workflow_does_not_know_is_refused_with_its_field(client: Client) -> None:
    run_id = client.start_run(workflow="approval", input={"text": "We ship it."})["id"]
    with pytest.raises(ValidationFailed) as refused:
        client.signal_run(run_id, "launch")
    assert refused.value.type.endswith(":unknown-signal")
    assert refused.value.field == "name"
    client.cancel_run(run_id)


WAIT_BRIEFLY = {
    "name": "wait-briefly",
    "version": "1.0.0",
    "kind": "fsm",
    "initial": "pause",
    "states": {
        "pause": {"sleep_seconds": 1, "transitions": [{"to": "ask"}]},
        "ask": {
            "wait": {"signals": ["go"], "timeout_seconds": 1},
            "transitions": [{"signal": "go", "to": "done"}, {"timeout": True, "to": "expired"}],
        },
        "done": {"final": True},
        "expired": {"final": True, "output": {"expired": True}},
    },
}


def test_a_durable_timer_and_a_signal_timeout_move_a_state_machine_on(client: Client) -> None:
    client.apply_workflow(WAIT_BRIEFLY)
    started = time.monotonic()
    final = _finished(client, client.start_run(workflow="wait-briefly", input={})["id"], timeout=30)

    assert final["state"] == "succeeded", final
    assert final["output"] == {"expired": True}
    assert time.monotonic() - started >= 2.0
    steps = _steps(final)
    assert steps["pause"]["output"] == {"slept_seconds": 1}
    assert steps["ask"]["state"] == "failed" and steps["ask"]["error"].startswith("timed out")


def test_a_failure_runs_the_compensations_of_completed_steps_newest_first(client: Client) -> None:
    client.apply_workflow(
        {
            "name": "saga",
            "version": "1.0.0",
            "kind": "dag",
            "steps": [
                {"name": "book", "tool": "noop", "input": {"booked": "$.input.trip"}, "compensate": {"tool": "noop"}},
                {
                    "name": "pay",
                    "tool": "noop",
                    "needs": ["book"],
                    "input": {"paid": "$.steps.book.output.booked"},
                    "compensate": {"tool": "noop", "input": {"refund": "$.steps.pay.output.paid"}},
                },
                {"name": "confirm", "tool": "fail@1.0.0", "needs": ["pay"], "input": {"reason": "no seats"}},
            ],
        }
    )
    final = _finished(client, client.start_run(workflow="saga", input={"trip": "lisbon"})["id"])

    assert final["state"] == "failed"
    assert [t["step"] for t in final["tasks"]] == ["book", "pay", "confirm", "undo:pay", "undo:book"]
    assert _steps(final)["undo:pay"]["input"] == {"refund": "lisbon"}
    assert "compensated 'pay', 'book'" in final["error"]


def test_cancelling_a_run_stops_the_sandbox_running_its_task(stack: Stack, client: Client) -> None:
    client.register_tool(
        {
            "name": "long-nap",
            "version": "1.0.0",
            "runtime": {"command": ["python3", "-c", "import time; time.sleep(60); print('{}')"]},
            "limits": {"wall_seconds": 120},
        }
    )
    run_id = client.start_run(tool="long-nap", input={})["id"]
    _wait_for_state(client, run_id, "long-nap", "running")
    task_id = client.get_run(run_id)["tasks"][0]["id"]

    client.cancel_run(run_id)

    logs = stack.root / "logs"
    deadline = time.monotonic() + 20
    while not any(f"stopping task {task_id}" in p.read_text(errors="replace") for p in logs.glob("test-*.log")):
        assert time.monotonic() < deadline, "no worker stopped the cancelled task"
        time.sleep(0.1)
    final = client.get_run(run_id)
    assert final["state"] == "cancelled" and final["tasks"][0]["state"] == "cancelled"


@pytest.fixture
def examples_on_own_stack(own_stack: Stack) -> Stack:
    with own_stack.client() as af:
        register_examples(af)
    return own_stack


@pytest.mark.parametrize(
    ("workflow", "run_input", "steps"),
    [
        ("iterative-review", {"draft": "A draft."}, 4),
        ("bug-resolution", {"report": BUG_TICKET}, 5),
        ("research", {"topic": "Durable workflows."}, 3),
    ],
    ids=["dag-loop", "fsm", "bt"],
)
def test_a_control_plane_killed_mid_run_continues_every_run_without_repeating_a_task(
    examples_on_own_stack: Stack, workflow: str, run_input: dict[str, Any], steps: int
) -> None:
    own_stack = examples_on_own_stack
    with own_stack.client() as af:
        run_ids = [af.start_run(workflow=workflow, input=run_input)["id"] for _ in range(3)]
        time.sleep(0.7)
    own_stack.kill_control_plane()
    time.sleep(1.0)
    own_stack.start_control_plane()
    with own_stack.client() as af:
        for run_id in run_ids:
            final = _finished(af, run_id)
            assert final["state"] == "succeeded", final
            assert len(final["tasks"]) == steps
            assert all(t["attempt"] == 1 for t in final["tasks"]), final["tasks"]
            succeeded = Counter(e["data"]["task_id"] for e in af.events(run_id) if e["type"] == "task.succeeded")
            assert set(succeeded.values()) == {1}, succeeded


def test_a_durable_timer_fires_after_the_control_plane_was_killed_while_it_ran(own_stack: Stack) -> None:
    with own_stack.client() as af:
        af.apply_workflow(
            {
                "name": "nap-then-go",
                "version": "1.0.0",
                "kind": "fsm",
                "initial": "nap",
                "states": {
                    "nap": {"sleep_seconds": 3, "transitions": [{"to": "done"}]},
                    "done": {"final": True, "output": {"woke": True}},
                },
            }
        )
        run_id = af.start_run(workflow="nap-then-go", input={})["id"]
        _wait_for_state(af, run_id, "nap", "queued")
    own_stack.kill_control_plane()
    time.sleep(1.0)
    own_stack.start_control_plane()
    with own_stack.client() as af:
        final = _finished(af, run_id, timeout=30)
        assert final["state"] == "succeeded", final
        assert final["output"] == {"woke": True}
        assert [t["step"] for t in final["tasks"]] == ["nap"]
