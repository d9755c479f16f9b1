"""Runs end to end: API → PostgreSQL → JetStream → worker → sandbox → result → PostgreSQL → next step."""

import json
import time
from collections.abc import Iterator

import pytest
from agentflow import Client, Conflict, load_tool_file
from agentflow.models import StartedRun

from control_plane.stack.processes import stop
from registry import audit, connect
from tests.conftest import EXAMPLES, Stack, start_and_cancel_while_running

pytestmark = pytest.mark.usefixtures("examples_registered")

TEXT = json.loads((EXAMPLES / "input.json").read_text())["text"]


def test_a_fan_out_fan_in_workflow_reaches_succeeded_with_the_joined_output(client: Client) -> None:
    run = client.start_run(workflow="doc-review", input={"text": TEXT})
    final = client.wait_run(run["id"], timeout=60)

    assert final["state"] == "succeeded", final
    assert final["output"] == {
        "words": 27,
        "sentences": 3,
        "top_word": "the",
        "summary": final["output"]["summary"],
        "label": "bug",
    }
    assert final["output"]["summary"].startswith("The login page crashes with an error when the password is empty.")
    steps = {task["step"]: task for task in final["tasks"]}
    assert set(steps) == {"stats", "summary", "label", "report"}
    assert all(task["state"] == "succeeded" and task["attempt"] == 1 for task in steps.values())
    # The join starts only after all three branches finished.
    assert steps["report"]["created_at"] >= max(steps[s]["finished_at"] for s in ("stats", "summary", "label"))
    assert steps["stats"]["sandbox"]["kind"] in ("runsc-cold", "runsc-warm")


def test_model_usage_reported_by_tools_is_recorded_per_task_and_summed_per_run(client: Client) -> None:
    final = client.wait_run(client.start_run(workflow="doc-review", input={"text": TEXT})["id"], timeout=60)
    steps = {task["step"]: task for task in final["tasks"]}
    reported = [steps[s]["detail"]["usage"] for s in ("summary", "label")]
    assert all(u["model"] == "mock-model-1" and u["input_tokens"] > 0 for u in reported)
    assert "usage" not in steps["stats"]["detail"]
    assert final["usage"]["input_tokens"] == sum(u["input_tokens"] for u in reported)
    assert final["usage"]["output_tokens"] == sum(u["output_tokens"] for u in reported)
    assert set(final["usage"]["by_model"]) == {"mock-model-1"}


def test_a_tool_call_runs_inside_gvisor_end_to_end(client: Client) -> None:
    source = "import json\nprint(json.dumps({'kernel': open('/proc/version').read()}))\n"
    client.register_tool(
        {
            "name": "kernel",
            "version": "1.0.0",
            "runtime": {"command": ["python3", "main.py"], "files": {"main.py": source}},
        }
    )
    final = client.wait_run(client.start_run(tool="kernel", input={})["id"], timeout=60)
    assert final["state"] == "succeeded", final
    assert final["output"]["kernel"].startswith("Linux version 4.4.0")  # gVisor's, not the host's
    assert final["tasks"][0]["sandbox"]["kind"] in ("runsc-cold", "runsc-warm")


def test_a_task_shows_its_sandbox_cpu_time_peak_memory_and_where_its_time_went(client: Client) -> None:
    source = (
        "import json, time\n"
        "memory = bytearray(50 * 1024 * 1024)\n"
        "for i in range(0, len(memory), 4096): memory[i] = 1\n"
        "start = time.process_time()\n"
        "while time.process_time() - start < 0.3: pass\n"
        "print(json.dumps({}))\n"
    )
    client.register_tool(
        {
            "name": "burner",
            "version": "1.0.0",
            "runtime": {"command": ["python3", "main.py"], "files": {"main.py": source}},
        }
    )

    final = client.wait_run(client.start_run(tool="burner", input={})["id"], timeout=60)

    assert final["state"] == "succeeded", final
    used = final["tasks"][0]["sandbox"]
    assert used["kind"] in ("runsc-cold", "runsc-warm")
    assert used["cpu_seconds"] >= 0.2
    assert used["max_rss_kb"] >= 50 * 1024
    timing = used["timing"]
    assert 0 <= timing["queue_seconds"] < 30
    assert 0 < timing["start_seconds"] < 30
    assert 0.3 <= timing["run_seconds"] < 30


def test_a_sandboxed_task_is_running_while_its_tool_runs(client: Client) -> None:
    client.register_tool(
        {
            "name": "naps",
            "version": "1.0.0",
            "runtime": {"command": ["python3", "-c", "import time; time.sleep(1.5); print('{}')"]},
        }
    )
    run = client.start_run(tool="naps", input={})
    deadline = time.monotonic() + 30
    while client.get_run(run["id"])["tasks"][0]["state"] != "running":
        assert time.monotonic() < deadline, "the task never showed as running"
        time.sleep(0.05)
    final = client.wait_run(run["id"], timeout=60)
    assert final["state"] == "succeeded"
    types = [e["type"] for e in client.events(run["id"])]
    assert types == ["run.created", "task.queued", "task.started", "task.succeeded", "run.succeeded"]
    assert final["tasks"][0]["started_at"] is not None and final["tasks"][0]["finished_at"] is not None


def test_a_single_tool_run_returns_the_tools_output(client: Client) -> None:
    run = client.start_run(tool="text-stats@1.0.0", input={"text": "One two. Three!"})
    final = client.wait_run(run["id"], timeout=30)
    assert final["state"] == "succeeded"
    assert final["output"]["words"] == 3
    assert final["output"]["sentences"] == 2


def test_a_failing_tool_fails_the_run_with_its_reason(client: Client) -> None:
    run = client.start_run(tool="fail", input={})
    final = client.wait_run(run["id"], timeout=30)
    assert final["state"] == "failed"
    assert "exited with code 3" in final["error"]
    (task,) = final["tasks"]
    assert task["state"] == "failed"
    assert task["detail"]["exit_code"] == 3
    assert task["detail"]["error_kind"] == "exit"


def test_a_tool_that_prints_non_json_fails_with_the_reason(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "main.py"
    script.write_text("print('this is not json')\n")
    spec = {
        "name": "prints-text",
        "version": "1.0.0",
        "runtime": {"command": ["python3", "main.py"], "files": {"main.py": script.read_text()}},
    }
    client.register_tool(spec)
    final = client.wait_run(client.start_run(tool="prints-text", input={})["id"], timeout=30)
    assert final["state"] == "failed"
    assert "not one JSON document" in final["error"]


def test_a_tool_past_its_wall_limit_fails_as_timed_out(client: Client) -> None:
    spec = {
        "name": "sleeper",
        "version": "1.0.0",
        "limits": {"wall_seconds": 0.5},
        "runtime": {"command": ["python3", "-c", "import time; time.sleep(30)"]},
    }
    client.register_tool(spec)
    final = client.wait_run(client.start_run(tool="sleeper", input={})["id"], timeout=30)
    assert final["state"] == "failed"
    assert "timed out after 0.5 s" in final["error"]


MEMORY_BOMB = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))\n"


@pytest.fixture(scope="module")
def process_worker(stack: Stack) -> Iterator[str]:
    """A worker of the process sandbox, on a queue of its own; the queue's name."""
    process = stack.start_worker(queue="process-sandbox", concurrency=1, AF_SANDBOX="process")
    yield "process-sandbox"
    stop(process.pid)


@pytest.mark.parametrize("sandbox", ["runsc", "process"])
def test_a_tool_past_its_memory_limit_fails_saying_so_with_what_it_used(
    client: Client, request: pytest.FixtureRequest, sandbox: str
) -> None:
    client.register_tool(
        {
            "name": "memory-bomb",
            "version": "1.0.0",
            "limits": {"memory_mb": 128, "wall_seconds": 20},
            "runtime": {"command": ["python3", "main.py"], "files": {"main.py": MEMORY_BOMB}},
        }
    )
    queue = request.getfixturevalue("process_worker") if sandbox == "process" else None
    final = client.wait_run(client.start_run(tool="memory-bomb", input={}, queue=queue)["id"], timeout=60)

    assert final["state"] == "failed"
    assert final["error"] == "memory limit (128 MiB) exceeded"
    (task,) = final["tasks"]
    assert task["sandbox"]["kind"].startswith(sandbox)
    assert task["sandbox"]["cpu_seconds"] > 0
    assert task["sandbox"]["max_rss_kb"] > 0


def test_a_failed_branch_cancels_the_rest_of_the_workflow(client: Client) -> None:
    client.apply_workflow(
        {
            "name": "fails-early",
            "version": "1.0.0",
            "kind": "dag",
            "steps": [
                {"name": "boom", "tool": "fail"},
                {"name": "after", "tool": "noop", "needs": ["boom"]},
            ],
        }
    )
    final = client.wait_run(client.start_run(workflow="fails-early", input={})["id"], timeout=30)
    assert final["state"] == "failed"
    assert "step 'boom' failed" in final["error"]
    assert [t["step"] for t in final["tasks"]] == ["boom"]


def test_the_same_idempotency_key_returns_the_same_run_and_another_body_conflicts(client: Client) -> None:
    first = client.start_run(tool="noop", input={"n": 1}, idempotency_key="order-42")
    again = client.start_run(tool="noop", input={"n": 1}, idempotency_key="order-42")
    assert again["id"] == first["id"]
    assert first.created and not again.created
    with pytest.raises(Conflict) as raised:
        client.start_run(tool="noop", input={"n": 2}, idempotency_key="order-42")
    assert raised.value.type.endswith("idempotency-conflict")


def test_repeating_a_finished_run_answers_the_state_it_ended_in(client: Client) -> None:
    first = client.start_run(tool="noop", input={"n": "repeat"}, idempotency_key="order-finished")
    assert (first["state"], first.created) == ("running", True)
    assert client.wait_run(first["id"], timeout=30)["state"] == "succeeded"
    again = client.start_run(tool="noop", input={"n": "repeat"}, idempotency_key="order-finished")
    assert (again["id"], again["state"], again.created) == (first["id"], "succeeded", False)
    (item,) = client.start_runs([{"tool": "noop", "input": {"n": "repeat"}, "idempotency_key": "order-finished"}])
    assert item == StartedRun(id=first["id"], state="succeeded", created=False)


def test_a_batch_answers_each_item_with_a_run_or_its_own_problem(client: Client) -> None:
    items = client.start_runs(
        [
            {"tool": "noop", "input": {"i": 1}},
            {"tool": "no-such-tool", "input": {}},
            {"tool": "noop", "input": {"i": 3}, "idempotency_key": "batch-3"},
        ]
    )
    assert "id" in items[0] and "id" in items[2]
    assert items[1]["problem"]["type"] == "urn:agentflow:problem:unknown-tool"
    for item in (items[0], items[2]):
        assert client.wait_run(item["id"], timeout=30)["state"] == "succeeded"


def test_events_resume_after_last_event_id_without_gaps(client: Client) -> None:
    run = client.start_run(workflow="doc-review", input={"text": TEXT})
    everything = list(client.events(run["id"]))
    seqs = [event["seq"] for event in everything]
    assert seqs == list(range(1, len(seqs) + 1))
    assert everything[0]["type"] == "run.created"
    assert everything[-1]["type"] == "run.succeeded"

    resumed = list(client.events(run["id"], last_event_id="3"))
    assert [event["seq"] for event in resumed] == seqs[3:]
    assert resumed == everything[3:]


def test_cancelling_a_run_cancels_its_open_tasks_and_a_finished_run_cannot_be_cancelled(
    client: Client,
) -> None:
    run = client.start_run(tool="noop", input={}, queue="nobody-pulls-this")
    cancelled = client.cancel_run(run["id"])
    assert cancelled["state"] == "cancelled"
    final = client.get_run(run["id"])
    assert [t["state"] for t in final["tasks"]] == ["cancelled"]
    assert [e["type"] for e in client.events(run["id"])][-2:] == ["task.cancelled", "run.cancelled"]
    with pytest.raises(Conflict):
        client.cancel_run(run["id"])


def test_a_task_cancelled_while_running_keeps_its_worker_and_start(client: Client) -> None:
    run_id, started = start_and_cancel_while_running(client)
    (task,) = client.get_run(run_id)["tasks"]
    assert task["state"] == "cancelled"
    assert task["worker_id"] == started["data"]["worker_id"]
    assert task["started_at"] is not None and task["finished_at"] >= task["started_at"]


def test_runs_list_newest_first_with_a_cursor(client: Client) -> None:
    ids = [client.start_run(tool="noop", input={"page": i})["id"] for i in range(3)]
    page = client.list_runs(limit=2)
    assert [r["id"] for r in page["items"]] == ids[::-1][:2]
    rest = client.list_runs(limit=2, cursor=page["next_cursor"])
    assert rest["items"][0]["id"] == ids[0]


def test_registering_the_same_tool_file_twice_is_a_no_op(client: Client) -> None:
    spec = load_tool_file(EXAMPLES / "tools" / "text-stats.yaml")
    assert client.register_tool(spec).created is False


def test_the_worker_fleet_lists_the_live_worker(client: Client) -> None:
    workers = client.list_workers()
    assert any(w["queues"] == ["default"] and w["sandbox"] == "runsc" for w in workers)


async def test_registrations_and_cancels_are_recorded_in_the_audit_trail(client: Client, stack: Stack) -> None:
    client.register_tool({"name": "audited", "version": "1.0.0", "runtime": {"command": ["true"]}})
    run = client.start_run(tool="noop", input={}, queue="nobody-pulls-this")
    client.cancel_run(run["id"])
    pool = await connect(stack.database_url, min_size=1, max_size=1)
    try:
        entries = await audit.recent(pool, "default")
    finally:
        await pool.close()
    seen = {(e.action, e.target, e.outcome) for e in entries}
    assert ("tool.register", "audited@1.0.0", "created") in seen
    assert ("run.cancel", run["id"], "cancelled") in seen
    assert all(e.actor.startswith("key:") and e.source == "127.0.0.1" for e in entries)


def test_a_tool_that_asks_for_warm_sandboxes_is_served_from_its_pool_after_its_first_call(client: Client) -> None:
    client.register_tool(
        {
            "name": "kept-warm",
            "version": "1.0.0",
            "runtime": {"command": ["python3", "-c", "print('{}')"], "warm": 1},
        }
    )
    kinds = []
    deadline = time.monotonic() + 60
    while "runsc-warm" not in kinds and time.monotonic() < deadline:
        final = client.wait_run(client.start_run(tool="kept-warm", input={})["id"], timeout=60)
        assert final["state"] == "succeeded", final
        kinds.append(final["tasks"][0]["sandbox"]["kind"])
        time.sleep(0.5)  # a sandbox boots in about 200 ms
    assert kinds[0] == "runsc-cold"
    assert kinds[-1] == "runsc-warm"
