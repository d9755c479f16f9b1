"""The real `af` command line, as a user runs it, against the real stack: a subprocess per command, with
AF_API_URL / AF_TOKEN in its environment, checked by its stdout, stderr and exit code."""

import json
import os
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from agentflow import Client

from control_plane.stack.processes import free_port, stop
from registry import run_reads
from tests.conftest import AF, EXAMPLES, ROOT, Af, Stack, start_and_cancel_while_running


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


def test_a_tool_file_with_an_unquoted_version_is_refused_until_it_ships_the_file_its_command_runs(
    af: Af, tmp_path: Path
) -> None:
    tool = tmp_path / "numbered.yaml"
    tool.write_text("name: cli-numbered\nversion: 1\nruntime:\n  command: [python3, main.py]\n")
    refused = af("tool", "register", str(tool))
    assert refused.returncode == 1
    line = one_error_line(refused)
    assert "'main.py'" in line and "runtime.files" in line and line.endswith("(field: runtime.command)"), line

    (tmp_path / "numbered.py").write_text("print('{}')\n")
    tool.write_text(tool.read_text() + "  files: {main.py: numbered.py}\n")
    registered = af("tool", "register", str(tool))
    assert registered.returncode == 0, registered.stderr
    assert registered.stdout == "tool cli-numbered@1 created\n"

    workflow = tmp_path / "numbered-flow.yaml"
    workflow.write_text("name: cli-numbered-flow\nversion: 1\nkind: dag\nsteps:\n  - {name: a, tool: cli-numbered@1}\n")
    applied = af("workflow", "apply", str(workflow))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.startswith("workflow cli-numbered-flow@1 created"), applied.stdout


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
def test_the_logs_of_a_finished_run_show_what_the_tool_wrote_to_stderr_under_its_task_event(af: Af) -> None:
    started = af("run", "fail", "--tool", "--input", '{"reason": "disk on fire"}', "--wait", "--output", "json")
    assert started.returncode == 1, started.stderr  # the run failed, as the tool does
    run_id = json.loads(started.stdout)["id"]

    for followed in (af("logs", run_id), af("logs", run_id, "--follow")):
        assert followed.returncode == 0, followed.stderr
        lines = followed.stdout.splitlines()
        failed = next(i for i, line in enumerate(lines) if line.split()[1] == "task.failed")
        assert lines[failed + 1] == "    [fail] fail: disk on fire", followed.stdout
        assert sum("[fail]" in line for line in lines) == 1

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


@pytest.mark.usefixtures("examples_registered_by_cli")
def test_a_rerun_is_a_new_run_of_the_same_target_version_with_the_same_input(af: Af) -> None:
    first = af("run", "doc-review", "--input", "@examples/input.json", "--wait", "--output", "json")
    assert first.returncode == 0, first.stderr
    earlier = json.loads(first.stdout)

    again = af("runs", "rerun", earlier["id"], "--wait", "--output", "json")
    assert again.returncode == 0, again.stderr
    rerun = json.loads(again.stdout)
    assert rerun["id"] != earlier["id"] and rerun["state"] == "succeeded"
    assert (rerun["workflow"], rerun["tool"], rerun["input"]) == (earlier["workflow"], None, earlier["input"])
    assert rerun["output"] == earlier["output"]

    tool_run = af("run", "noop", "--tool", "--input", '{"n": 1}', "--output", "json")
    tool_run_id = json.loads(tool_run.stdout)["id"]
    started = af("runs", "rerun", tool_run_id)
    assert started.returncode == 0, started.stderr
    got = json.loads(af("runs", "get", started.stdout.strip(), "--output", "json").stdout)
    original = json.loads(af("runs", "get", tool_run_id, "--output", "json").stdout)
    assert got["tool"] == original["tool"] and got["tool"].startswith("noop@") and got["input"] == {"n": 1}

    missing = af("runs", "rerun", "no-such-run")
    assert missing.returncode == 1 and "no-such-run" in one_error_line(missing)


def test_the_worker_fleet_lists_the_stacks_worker_as_json(af: Af) -> None:
    result = af("workers", "ls", "--output", "json")
    assert result.returncode == 0, result.stderr
    workers = json.loads(result.stdout)["items"]
    assert any(worker["queues"] == ["default"] and worker["sandbox"] == "runsc" for worker in workers), workers


def test_runs_get_shows_the_worker_and_duration_of_a_task_cancelled_while_running(af: Af, client: Client) -> None:
    run_id, started = start_and_cancel_while_running(client)
    result = af("runs", "get", run_id)
    assert result.returncode == 0, result.stderr
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("dozer ")]
    cells = row.split()
    assert cells[:4] == ["dozer", "dozer@1.0.0", "cancelled", "1"], row
    assert cells[4] == started["data"]["worker_id"], row
    assert len(cells) == 6 and cells[5].endswith("s"), row  # the duration


@pytest.mark.parametrize(("tool", "ended"), [("noop", "succeeded"), ("fail", "failed")])
@pytest.mark.usefixtures("examples_registered_by_cli")
def test_cancelling_a_finished_run_says_the_state_it_ended_in(af: Af, tool: str, ended: str) -> None:
    run = json.loads(af("run", tool, "--tool", "--input", "{}", "--wait", "--output", "json").stdout)
    assert run["state"] == ended
    result = af("cancel", run["id"])
    assert result.returncode == 1
    line = one_error_line(result)
    assert ended in line and "cancelled" not in line, line


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


def test_a_run_on_a_queue_no_worker_serves_is_refused_when_the_caller_requires_a_worker(af: Af) -> None:
    result = af("run", "noop", "--tool", "--input", "{}", "--queue", "nobody-serves", "--require-worker")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "no live worker serves queue 'nobody-serves'" in line and "(field: queue)" in line, line


def test_a_run_on_a_queue_no_worker_serves_warns_at_once_and_while_waiting_until_a_worker_starts(
    stack: Stack, af_env: dict[str, str], tmp_path: Path
) -> None:
    queue = f"later-{uuid.uuid4().hex[:8]}"
    stderr = tmp_path / "stderr"
    with stderr.open("w") as sink:
        waiting = subprocess.Popen(
            [str(AF), "run", "noop", "--tool", "--input", "{}", "--queue", queue, "--wait", "--output", "json"],
            env=af_env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
        )
    worker = None
    try:
        told = _wait_for_line(stderr, "still waiting", waiting)
        assert told[0] == f"af: warning: no live worker serves queue {queue!r}: the run waits until one starts " + (
            f"(af worker start --queue {queue})"
        )
        assert told[1].startswith(f"af: still waiting: no live worker serves queue {queue!r}"), told
        worker = stack.start_worker(queue=queue, concurrency=1)
        out, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, stderr.read_text()
        assert json.loads(out)["state"] == "succeeded"
    finally:
        if waiting.poll() is None:
            stop(waiting.pid)
        if worker is not None:
            stop(worker.pid)


def _wait_for_line(path: Path, text: str, process: subprocess.Popen[str]) -> list[str]:
    """The lines of ``path`` once one holds ``text`` (what ``process`` writes there)."""
    deadline = time.monotonic() + 30
    while True:
        lines = path.read_text().splitlines()
        if any(text in line for line in lines):
            return lines
        assert process.poll() is None, lines
        assert time.monotonic() < deadline, f"no line with {text!r}: {lines}"
        time.sleep(0.1)


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
    entry = {
        "queue": "cli-limited",
        "max_in_flight": 3,
        "priority": 4,
        "in_flight": 0,
        "held": 0,
        "depth": 0,
        "oldest_age_seconds": 0.0,
    }
    assert entry in listed["items"]
    table = af("queues", "ls")
    assert table.returncode == 0
    assert any(line.split()[:3] == ["cli-limited", "3", "4"] for line in table.stdout.splitlines())


def test_a_queue_priority_out_of_range_is_a_usage_error(af: Af) -> None:
    result = af("queues", "set", "cli-limited", "--priority", "10")
    assert result.returncode == 2
    assert "priority" in result.stderr


# --- run ids: whole in tables, and taken by their start -----------------------------------------------


def _unique_start(run_id: str, others: list[str]) -> str:
    """The shortest start of ``run_id`` that none of ``others`` has."""
    return next(run_id[:n] for n in range(1, len(run_id) + 1) if not any(o.startswith(run_id[:n]) for o in others))


def _own_tenant(af: Af, name: str) -> str:
    """The admin key of a new tenant of the calling test alone, whose runs are only the test's."""
    made = af("tenants", "create", f"{name}-{secrets.token_hex(3)}", "-o", "json")
    assert made.returncode == 0, made.stderr
    return str(json.loads(made.stdout)["admin_key"]["key"])


def test_every_run_command_takes_the_unique_start_of_an_id_and_an_ambiguous_one_is_one_line(af: Af) -> None:
    token = _own_tenant(af, "prefixes")  # so that its runs are the only ones a prefix can match
    ids = []
    for _ in range(3):
        started = af("run", "noop", "--tool", "-o", "json", AF_TOKEN=token)
        assert started.returncode == 0, started.stderr
        ids.append(json.loads(started.stdout)["id"])
    first, *others = ids

    listed = af("runs", "ls", AF_TOKEN=token)
    shared = os.path.commonprefix(ids)  # noqa: RUF071 (ids, not paths)
    ambiguous = af("runs", "get", shared, AF_TOKEN=token)
    start = _unique_start(first, others)
    shown = af("runs", "get", start, "-o", "json", AF_TOKEN=token)
    logs = af("logs", start, "-o", "json", AF_TOKEN=token)
    calls = af("llm", "calls", start, "-o", "json", AF_TOKEN=token)
    ambiguous_calls = af("llm", "calls", shared, AF_TOKEN=token)
    cancelled = af("cancel", start, "-o", "json", AF_TOKEN=token)
    unknown = af("runs", "get", "not-an-id", AF_TOKEN=token)

    assert {line.split()[0] for line in listed.stdout.splitlines()[1:]} == set(ids)
    assert shared  # UUIDv7s of one tenant made within a minute share their first hex digits
    assert ambiguous.returncode == 1
    assert one_error_line(ambiguous) == f"af: run id prefix {shared} matches 3 runs; give more of the id (field: id)"
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == first
    assert json.loads(logs.stdout.splitlines()[0])["type"] == "run.created"
    assert calls.returncode == 0, calls.stderr
    assert json.loads(calls.stdout) == {"items": []}  # a noop run calls no model
    assert one_error_line(ambiguous_calls) == one_error_line(ambiguous)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["id"] == first
    assert json.loads(cancelled.stdout)["state"] == "cancelled"
    assert unknown.returncode == 1
    assert one_error_line(unknown) == "af: no run not-an-id (field: id)"
    for run_id in others:
        assert af("cancel", run_id, AF_TOKEN=token).returncode == 0


async def test_a_prefix_is_looked_up_as_a_range_of_the_tenants_id_index(stack: Stack) -> None:
    connection = await asyncpg.connect(stack.database_url)
    try:
        await connection.execute("SET enable_seqscan = off")  # a plan that can use an index must now use one
        plan = await connection.fetchval(
            f"EXPLAIN (FORMAT JSON) {run_reads.MATCH_RUN_IDS}", *run_reads.id_range("default", "01a2")
        )
    finally:
        await connection.close()

    text = json.dumps(plan)
    assert "Index" in text and "Index Cond" in text
    assert "id >= '01a20000-0000-0000-0000-000000000000'::uuid" in text, text


# --- runs ls: filters and pages -----------------------------------------------------------------------


def test_runs_ls_keeps_a_workflows_runs_created_since_a_time_a_page_at_a_time(af: Af, tmp_path: Path) -> None:
    token = _own_tenant(af, "listing")
    workflow = tmp_path / "wait-for-go.json"
    workflow.write_text(json.dumps(WAIT_FOR_GO))
    assert af("workflow", "apply", str(workflow), AF_TOKEN=token).returncode == 0
    started = [af("run", "wait-for-go", "-o", "json", AF_TOKEN=token) for _ in range(2)]
    started.append(af("run", "noop", "--tool", "-o", "json", AF_TOKEN=token))
    first, second, tool_run = (json.loads(result.stdout)["id"] for result in started)

    def listed(*args: str) -> dict[str, Any]:
        result = af("runs", "ls", *args, "-o", "json", AF_TOKEN=token)
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def ids(page: dict[str, Any]) -> list[str]:
        return [run["id"] for run in page["items"]]

    everything = listed("--since", "1h")
    second_created = next(run["created_at"] for run in everything["items"] if run["id"] == second)
    first_page = listed("--workflow", "wait-for-go", "--limit", "1")
    second_page = listed("--workflow", "wait-for-go", "--limit", "1", "--cursor", first_page["next_cursor"])

    assert ids(everything) == [tool_run, second, first]
    assert everything["next_cursor"] is None
    assert ids(listed("--workflow", "wait-for-go")) == [second, first]
    assert ids(listed("--workflow", "wait-for-go@1.0.0")) == [second, first]
    assert ids(listed("--workflow", "wait-for-go@9.9.9")) == []
    assert ids(listed("--since", second_created)) == [tool_run, second]
    assert ids(listed("--since", "0001-01-01T00:00:00+00:00")) == [tool_run, second, first]
    assert ids(listed("--since", "9999-12-31T00:00:00+00:00")) == []
    assert ids(first_page) == [second] and first_page["next_cursor"] == second
    assert ids(second_page) == [first]
    before_time = af("runs", "ls", "--since", "0001-01-01T00:00:00+01:00", AF_TOKEN=token)
    assert one_error_line(before_time) == (
        "af: invalid since '0001-01-01T00:00:00+01:00': expected an ISO 8601 time (field: since)"
    )
    bad = af("runs", "ls", "--workflow", "Not A Name", AF_TOKEN=token)
    assert bad.returncode == 1
    assert one_error_line(bad) == ("af: invalid workflow 'Not A Name': expected NAME or NAME@VERSION (field: workflow)")
    for run_id in (first, second, tool_run):
        assert af("cancel", run_id, AF_TOKEN=token).returncode == 0


# --- af logs --follow: a tool's stderr while it runs ----------------------------------------------------

LIVE_TOOL = """
import json, os, sys, time
go = json.load(sys.stdin)["go"]
sys.stderr.write("waiting for the test\\n"); sys.stderr.flush()
deadline = time.monotonic() + 25
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.02)
sys.stderr.write("released\\n" if os.path.exists(go) else "never released\\n")
print(json.dumps({"released": os.path.exists(go)}))
"""


def test_logs_follow_shows_a_tools_stderr_while_it_runs(
    stack: Stack, af: Af, af_env: dict[str, str], tmp_path: Path
) -> None:
    # The tool waits for a file the test makes only once `af logs --follow` has shown the tool's first line:
    # shown at the tool's end instead, it would never be released. A process sandbox, to share the file.
    stack.start_worker(queue="live-logs", concurrency=1, AF_SANDBOX="process")
    (tmp_path / "main.py").write_text(LIVE_TOOL)
    tool = tmp_path / "live-stderr.yaml"
    tool.write_text(
        "name: live-stderr\nversion: 1.0.0\nruntime: {command: [python3, main.py], files: {main.py: main.py}}\n"
        "limits: {wall_seconds: 40}\n"
    )
    assert af("tool", "register", str(tool)).returncode == 0
    go = tmp_path / "go"
    started = af("run", "live-stderr", "--tool", "--queue", "live-logs", "--input", json.dumps({"go": str(go)}))
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()

    lines = []
    with subprocess.Popen(
        [str(AF), "logs", run_id, "--follow"], env=af_env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as follower:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == "[live-stderr] waiting for the test":
                go.touch()
        assert follower.wait(timeout=60) == 0

    events = [line.split()[1] for line in lines if not line.startswith(" ")]
    assert events[-2:] == ["task.succeeded", "run.succeeded"], lines
    stderr = [line for line in lines if line.startswith(" ")]
    # Both lines came while the tool ran, before its task's event, which then repeats neither.
    assert stderr == ["    [live-stderr] waiting for the test", "    [live-stderr] released"], lines
    assert lines.index(stderr[-1]) < lines.index(next(line for line in lines if "task.succeeded" in line))
    run = json.loads(af("runs", "get", run_id, "-o", "json").stdout)
    assert run["output"] == {"released": True}
