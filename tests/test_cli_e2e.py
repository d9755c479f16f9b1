"""The real `af` command line, as a user runs it, against the real stack: a subprocess per command, with
AF_API_URL / AF_TOKEN in its environment, checked by its stdout, stderr and exit code."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from control_plane.stack.processes import free_port
from tests.conftest import EXAMPLES, ROOT, Af


@pytest.fixture(scope="module")
def examples_registered_by_cli(af: Af) -> None:
    for tool_file in sorted((EXAMPLES / "tools").glob("*.yaml")):
        result = af("tool", "register", str(tool_file.relative_to(ROOT)))
        assert result.returncode == 0, result.stderr
    result = af("workflow", "apply", "examples/workflows/doc-review.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("workflow doc-review@1.0.0 "), result.stdout


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failing command writes on stderr, with nothing on stdout."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == "", result.stdout
    return lines[0]


# --- tools and workflows ----------------------------------------------------------------------------


def test_registering_a_tool_file_says_created_then_unchanged(af: Af, tmp_path: Path) -> None:
    # A copy under another name, so this test sees the first registration whatever ran before it.
    shutil.copy(EXAMPLES / "tools" / "text_stats.py", tmp_path / "text_stats.py")
    spec = (EXAMPLES / "tools" / "text-stats.yaml").read_text().replace("name: text-stats", "name: cli-text-stats")
    (tmp_path / "cli-text-stats.yaml").write_text(spec)

    first = af("tool", "register", str(tmp_path / "cli-text-stats.yaml"))
    assert first.returncode == 0, first.stderr
    assert first.stdout == "tool cli-text-stats@1.0.0 created\n"

    again = af("tool", "register", str(tmp_path / "cli-text-stats.yaml"))
    assert again.returncode == 0, again.stderr
    assert again.stdout == "tool cli-text-stats@1.0.0 unchanged (this version already exists)\n"


def test_registering_the_example_tool_file_twice_leaves_it_unchanged(af: Af) -> None:
    first = af("tool", "register", "examples/tools/text-stats.yaml")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("tool text-stats@1.0.0 "), first.stdout

    again = af("tool", "register", "examples/tools/text-stats.yaml", "--output", "json")
    assert again.returncode == 0, again.stderr
    stored = json.loads(again.stdout)
    assert (stored["name"], stored["version"]) == ("text-stats", "1.0.0")
    assert stored["spec"]["runtime"]["files"]["main.py"] == (EXAMPLES / "tools" / "text_stats.py").read_text()


@pytest.mark.usefixtures("examples_registered_by_cli")
def test_applying_the_example_workflow_again_leaves_it_unchanged(af: Af) -> None:
    result = af("workflow", "apply", "examples/workflows/doc-review.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "workflow doc-review@1.0.0 unchanged (this version already exists)\n"


# --- runs -------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("examples_registered_by_cli")
def test_a_run_waited_for_with_json_output_prints_only_the_succeeded_run_then_reads_back(af: Af) -> None:
    result = af("run", "doc-review", "--input", "@examples/input.json", "--wait", "--output", "json")
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)  # stdout is exactly one JSON document
    assert run["state"] == "succeeded", run
    assert run["workflow"] == "doc-review@1.0.0"
    assert run["output"]["words"] == 27
    assert {task["step"] for task in run["tasks"]} == {"stats", "summary", "label", "report"}

    got = af("runs", "get", run["id"], "--output", "json")
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == run

    listed = af("runs", "ls", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert run["id"] in [item["id"] for item in page["items"]]

    succeeded = af("runs", "ls", "--state", "succeeded", "--output", "json")
    assert all(item["state"] == "succeeded" for item in json.loads(succeeded.stdout)["items"])

    logs = af("logs", run["id"])
    assert logs.returncode == 0, logs.stderr
    types = [line.split()[1] for line in logs.stdout.splitlines()]
    assert types[0] == "run.created"
    assert types[-1] == "run.succeeded"
    assert types.count("task.queued") == 4 and types.count("task.succeeded") == 4, logs.stdout

    json_logs = af("logs", run["id"], "--output", "json")
    events = [json.loads(line) for line in json_logs.stdout.splitlines()]
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert [event["type"] for event in events] == types


@pytest.mark.usefixtures("examples_registered_by_cli")
def test_logs_show_what_the_tool_wrote_to_stderr_under_its_task_event(af: Af) -> None:
    started = af("run", "fail", "--tool", "--input", '{"reason": "disk on fire"}', "--output", "json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]

    followed = af("logs", run_id, "--follow")
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.split()[1] == "task.failed")
    assert lines[failed + 1] == "    [fail] fail: disk on fire", followed.stdout

    as_json = af("logs", run_id, "--follow", "--output", "json")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    (failure,) = [event for event in events if event["type"] == "task.failed"]
    assert failure["data"]["stderr"] == "fail: disk on fire\n"


def test_a_tool_run_printed_as_a_table_shows_its_state_and_tasks(af: Af) -> None:
    result = af("run", "noop", "--tool", "--input", '{"hello": "world"}', "--wait")
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert '{"hello":"world"}' in result.stdout
    assert "noop@1" in result.stdout


def test_the_worker_fleet_lists_the_stacks_worker_as_json(af: Af) -> None:
    result = af("workers", "ls", "--output", "json")
    assert result.returncode == 0, result.stderr
    workers = json.loads(result.stdout)["items"]
    assert any(worker["queues"] == ["default"] and worker["sandbox"] == "runsc" for worker in workers), workers


# --- errors -----------------------------------------------------------------------------------------


def test_an_unknown_tool_is_one_line_on_stderr_and_exit_1(af: Af) -> None:
    result = af("run", "no-such-tool", "--tool", "--input", "{}")
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("af: "), line
    assert "no-such-tool" in line and "(field: tool)" in line


@pytest.mark.usefixtures("examples_registered_by_cli")
def test_a_failed_run_waited_for_prints_it_and_exits_1(af: Af) -> None:
    result = af("run", "fail", "--tool", "--input", "{}", "--wait", "--output", "json")
    assert result.returncode == 1, result.stderr
    run = json.loads(result.stdout)
    assert run["state"] == "failed"
    assert "exited with code 3" in run["error"]


def test_an_invalid_queue_is_one_line_and_exit_1(af: Af) -> None:
    result = af("run", "noop", "--tool", "--input", "{}", "--queue", "Bad.Queue")
    assert result.returncode == 1
    assert one_error_line(result).startswith("af: invalid queue")


def test_a_missing_tool_file_is_one_line_and_a_failure(af: Af, tmp_path: Path) -> None:
    result = af("tool", "register", str(tmp_path / "nowhere.yaml"))
    assert result.returncode != 0
    line = one_error_line(result)
    assert line.startswith("af: ") and "nowhere.yaml" in line, line


def test_a_missing_input_file_is_one_line_and_a_failure(af: Af, tmp_path: Path) -> None:
    result = af("run", "noop", "--tool", "--input", f"@{tmp_path / 'nowhere.json'}")
    assert result.returncode != 0
    line = one_error_line(result)
    assert line.startswith("af: ") and "nowhere.json" in line, line


def test_input_that_is_not_json_is_one_line_and_a_usage_failure(af: Af) -> None:
    result = af("run", "noop", "--tool", "--input", "{not json")
    assert result.returncode == 2
    line = one_error_line(result)
    assert line.startswith("af: ") and "not valid JSON" in line, line


def test_an_unreachable_api_is_one_line_and_exit_3(af: Af) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    result = af("runs", "ls", AF_API_URL=closed)
    assert result.returncode == 3
    line = one_error_line(result)
    assert line.startswith("af: cannot reach the AgentFlow API at " + closed), line


def test_an_invalid_token_is_one_line_and_exit_1(af: Af) -> None:
    result = af("runs", "ls", AF_TOKEN="af_000000000000_wrong")
    assert result.returncode == 1
    assert one_error_line(result).startswith("af: the API key is not valid")


WAIT_FOR_GO = {
    "name": "wait-for-go",
    "version": "1.0.0",
    "kind": "fsm",
    "initial": "ask",
    "states": {
        "ask": {"wait": {"signals": ["go"]}, "transitions": [{"signal": "go", "to": "done"}]},
        "done": {"final": True, "output": {"said": "$.steps.ask.output.data"}},
    },
}


def test_a_signal_sent_with_af_signal_moves_a_waiting_run_on_and_a_second_one_is_refused(
    af: Af, tmp_path: Path
) -> None:
    workflow = tmp_path / "wait-for-go.json"
    workflow.write_text(json.dumps(WAIT_FOR_GO))
    assert af("workflow", "apply", str(workflow)).returncode == 0
    run = json.loads(af("run", "wait-for-go", "--output", "json").stdout)

    sent = af("signal", run["id"], "go", "--data", '{"by": "ana"}')
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == f"run {run['id']}: signal go taken by step ask"

    done = af("runs", "get", run["id"], "--output", "json")
    assert json.loads(done.stdout)["output"] == {"said": {"by": "ana"}}

    again = af("signal", run["id"], "go")
    assert again.returncode == 1
    assert "already succeeded" in one_error_line(again)


def test_a_signal_the_workflow_does_not_take_is_one_line_and_exit_1(af: Af, tmp_path: Path) -> None:
    workflow = tmp_path / "wait-for-go.json"
    workflow.write_text(json.dumps(WAIT_FOR_GO))
    assert af("workflow", "apply", str(workflow)).returncode == 0
    run = json.loads(af("run", "wait-for-go", "--output", "json").stdout)

    unknown = af("signal", run["id"], "launch")
    assert unknown.returncode == 1
    assert "takes no signal 'launch' (its signals: go)" in one_error_line(unknown)
    assert af("signal", run["id"], "go").returncode == 0


def test_a_queue_limit_set_with_af_queues_is_listed_as_json_and_as_a_table(af: Af) -> None:
    result = af("queues", "set", "cli-limited", "--max-in-flight", "3", "--priority", "4", "--output", "json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(af("queues", "ls", "--output", "json").stdout)
    entry = {"queue": "cli-limited", "max_in_flight": 3, "priority": 4, "in_flight": 0, "held": 0}
    assert entry in listed["items"]
    table = af("queues", "ls")
    assert table.returncode == 0
    assert any(line.split()[:3] == ["cli-limited", "3", "4"] for line in table.stdout.splitlines())


def test_a_queue_priority_out_of_range_is_a_usage_error(af: Af) -> None:
    result = af("queues", "set", "cli-limited", "--priority", "10")
    assert result.returncode == 2
    assert "priority" in result.stderr
