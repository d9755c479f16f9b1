"""The `af` commands against a MockTransport-backed client: what they send, what they print, one-line
errors and exit codes (1 API, 2 usage, 3 transport)."""

import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow import Client, load_workflow_file
from agentflow.cli import cli
from click.testing import CliRunner, Result

Route = httpx.Response | Callable[[httpx.Request], httpx.Response]


def task_doc(**fields: Any) -> dict[str, Any]:
    """A task as the API shows it in its run."""
    task = {"id": "t", "step": "s", "element": "", "tool": "x@1", "queue": "default", "attempt": 1}
    task |= {"state": "queued", "input": {}, "output": None, "error": None, "detail": None, "worker_id": None}
    task |= {"created_at": "2025-01-01T10:00:00+00:00", "started_at": None, "finished_at": None, "sandbox": None}
    return task | fields


RUN = {
    "id": "r1",
    "tenant": "default",
    "workflow": "triage@1.0.0",
    "tool": None,
    "agent": None,
    "state": "failed",
    "input": {"url": "x"},
    "output": None,
    "error": "step b failed",
    "created_at": "2025-01-01T10:00:00+00:00",
    "updated_at": "2025-01-01T10:00:03+00:00",
    "finished_at": "2025-01-01T10:00:03+00:00",
    "tasks": [
        task_doc(
            id="t1",
            step="fetch",
            tool="http-get@1",
            state="succeeded",
            worker_id="host-1",
            started_at="2025-01-01T10:00:00+00:00",
            finished_at="2025-01-01T10:00:01.500000+00:00",
            sandbox={
                "kind": "runsc-warm",
                "cpu_seconds": 0.3121,
                "max_rss_kb": 65536,
                "timing": {"queue_seconds": 0.004, "start_seconds": 0.012, "run_seconds": 1.4},
            },
        ),
        task_doc(
            id="t2", step="parse", tool="parser@2", state="dead", attempt=3, worker_id="host-2", error="exit status 1"
        ),
    ],
    "usage": None,
    "waiting": [],
}
LISTED = {k: v for k, v in RUN.items() if k not in ("tasks", "usage", "waiting")}
"""The run as listings and cancel show it."""
STARTED = {"id": "r1", "state": "running", "created": True}
WORKER = {
    "tenant": "default",
    "queues": ["default", "gpu"],
    "concurrency": 8,
    "in_flight": 2,
    "sandbox": "runsc",
    "pid": 7,
    "host": "host",
    "started_at": "2025-01-01T10:00:00+00:00",
    "metrics_port": 0,
    "holding": [],
    "id": "host-1",
    "last_heartbeat": "2025-01-01T10:00:00+00:00",
}


class API:
    """Answers by (method, path) and records what it was sent."""

    def __init__(self, routes: dict[tuple[str, str], Route]) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes[(request.method, request.url.path)]
        return route(request) if callable(route) else route

    def client(self, api_url: str | None, token: str | None) -> Client:
        return Client("http://af.test", "t", transport=httpx.MockTransport(self))


def af(api: API, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), obj=api.client)


def conflict(slug: str, detail: str, field: str | None = None) -> httpx.Response:
    """A 409 problem with only what the CLI shows: type, detail and field."""
    body = {"type": f"urn:agentflow:problem:{slug}", "detail": detail, "field": field}
    return httpx.Response(409, json=body, headers={"content-type": "application/problem+json"})


def events(*types: str, idle: bool = False) -> httpx.Response:
    """An event stream; `idle` leaves it open and quiet after the events, as for an unfinished run."""

    def body() -> Iterator[bytes]:
        for seq, type_ in enumerate(types, 1):
            document = {"seq": seq, "type": type_, "at": "2025-01-01T10:00:00Z", "data": {"step": "fetch"}}
            yield f"id: {seq}\nevent: {type_}\ndata: {json.dumps(document)}\n\n".encode()
        if idle:
            raise httpx.ReadTimeout("no event for a while")

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def assert_one_line_error(result: Result, exit_code: int, message: str) -> None:
    assert result.exit_code == exit_code, result.output
    assert result.stdout == ""
    assert result.stderr == f"af: {message}\n"


@pytest.fixture
def tool_file(tmp_path: Path) -> Path:
    (tmp_path / "main.py").write_text("print(1)\n")
    path = tmp_path / "echo.yaml"
    path.write_text("name: echo\nversion: 1.0.0\nruntime:\n  command: [python, main.py]\n  files: {main.py: main.py}\n")
    return path


TOOL: dict[str, Any] = {
    "tenant": "default",
    "name": "echo",
    "version": "1.0.0",
    "spec": {},
    "digest": "sha256:ab",
    "created_at": "2025-01-01T10:00:00+00:00",
}


@pytest.mark.parametrize(("status", "outcome"), [(201, "created"), (200, "unchanged")])
def test_tool_register_says_created_or_unchanged(tool_file: Path, status: int, outcome: str) -> None:
    api = API({("POST", "/v1/tools"): httpx.Response(status, json=TOOL)})

    result = af(api, "tool", "register", str(tool_file))

    assert result.exit_code == 0
    assert result.stdout.startswith(f"tool echo@1.0.0 {outcome}")
    assert json.loads(api.requests[0].content)["runtime"]["files"] == {"main.py": "print(1)\n"}


def test_tool_register_json_prints_exactly_the_api_json(tool_file: Path) -> None:
    api = API({("POST", "/v1/tools"): httpx.Response(201, json=TOOL)})

    result = af(api, "tool", "register", str(tool_file), "--output", "json")

    assert json.loads(result.stdout) == TOOL


def test_workflow_apply_conflict_is_one_line_with_the_field(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text('{"name": "triage", "version": "1.0.0", "kind": "dag", "steps": []}')
    api = API({("POST", "/v1/workflows"): conflict("duplicate-version", "triage@1.0.0 exists", "version")})

    assert_one_line_error(af(api, "workflow", "apply", str(path)), 1, "triage@1.0.0 exists (field: version)")


def test_bad_file_is_one_line_and_sends_nothing(tmp_path: Path) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text("- not\n- a mapping\n")
    api = API({})

    assert_one_line_error(
        af(api, "workflow", "apply", str(path)),
        1,
        f"{path}: expected a mapping at the top level, found a list",
    )
    assert api.requests == []


def test_unreachable_api_exits_3() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    result = af(API({("GET", "/v1/runs"): refuse}), "runs", "ls")

    assert_one_line_error(
        result,
        3,
        "cannot reach the AgentFlow API at http://af.test: Connection refused"
        " (is the stack up? af status shows it; af up starts it or what exited)",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "No such command 'nope'. (see 'af --help')"),
        (["run", "w", "--input", "{x"], "Invalid value for '--input': not valid JSON: "),
        (["run", "w", "--input", "@/no/such.json"], "Invalid value for '--input': cannot read /no/such.json"),
        (["run", "w", "--wait", "--follow"], "--wait and --follow exclude each other (see 'af run --help')"),
        (["runs", "ls", "--state", "odd"], "Invalid value for '--state': 'odd' is not one of"),
        (["--bogus", "runs", "ls"], "No such option '--bogus'. (see 'af --help')"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = af(API({}), *args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"af: {message}")
    assert result.stderr.count("\n") == 1


def test_run_prints_the_run_id_and_sends_the_request(tmp_path: Path) -> None:
    (tmp_path / "in.json").write_text('{"url": "https://example.org"}')
    api = API({("POST", "/v1/runs"): httpx.Response(201, json={"id": "r1", "state": "running", "created": True})})

    result = af(api, "run", "echo@1", "--tool", "--input", f"@{tmp_path / 'in.json'}", "--idempotency-key", "k")

    assert (result.exit_code, result.stdout) == (0, "r1\n")
    assert json.loads(api.requests[0].content) == {"tool": "echo@1", "input": {"url": "https://example.org"}}
    assert api.requests[0].headers["idempotency-key"] == "k"


def test_run_wait_prints_the_failed_run_and_exits_1() -> None:
    api = API(
        {
            ("POST", "/v1/runs"): httpx.Response(201, json=STARTED),
            ("GET", "/v1/runs/r1/events"): events("run.created", "run.failed"),
            ("GET", "/v1/runs/r1"): httpx.Response(200, json=RUN),
        }
    )

    result = af(api, "run", "triage", "--input", '{"url": "x"}', "--queue", "q", "--wait")

    assert result.exit_code == 1
    assert json.loads(api.requests[0].content) == {"workflow": "triage", "input": {"url": "x"}, "queue": "q"}
    for text in [
        "triage@1.0.0",
        "failed",
        "step b failed",
        "fetch",
        "http-get@1",
        "1.5s",
        "parse",
        "exit status 1",
    ]:
        assert text in result.stdout
    assert result.stderr == ""


def test_run_follow_json_prints_json_lines_only() -> None:
    api = API(
        {
            ("POST", "/v1/runs"): httpx.Response(201, json=STARTED),
            ("GET", "/v1/runs/r1/events"): events("run.created", "task.queued", "run.succeeded"),
            ("GET", "/v1/runs/r1"): httpx.Response(200, json={**RUN, "state": "succeeded"}),
        }
    )

    result = af(api, "run", "triage", "--follow", "-o", "json")

    assert result.exit_code == 0
    documents = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d.get("type") for d in documents[:3]] == ["run.created", "task.queued", "run.succeeded"]
    assert documents[3]["state"] == "succeeded"
    assert len(documents) == 4


def test_run_follow_prints_a_line_per_event() -> None:
    api = API(
        {
            ("POST", "/v1/runs"): httpx.Response(201, json=STARTED),
            ("GET", "/v1/runs/r1/events"): events("run.created", "run.succeeded"),
            ("GET", "/v1/runs/r1"): httpx.Response(200, json={**RUN, "state": "succeeded"}),
        }
    )

    lines = af(api, "run", "triage", "--follow").stdout.splitlines()

    assert "run.created" in lines[0] and "fetch" in lines[0]
    assert "run.succeeded" in lines[1]
    assert api.requests[1].url.params["logs"] == "true"  # and the tools' stderr as it is written


def test_logs_prints_the_events_so_far() -> None:
    api = API({("GET", "/v1/runs/r1/events"): events("run.created", "task.queued", idle=True)})

    result = af(api, "logs", "r1", "-o", "json")

    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [1, 2]


def test_runs_ls_and_get() -> None:
    page = {"items": [LISTED], "next_cursor": None}
    api = API(
        {
            ("GET", "/v1/runs"): httpx.Response(200, json=page),
            ("GET", "/v1/runs/r1"): httpx.Response(200, json=RUN),
        }
    )

    listed = af(api, "runs", "ls", "--state", "failed", "--limit", "5")
    shown = af(api, "runs", "get", "r1")

    assert dict(api.requests[0].url.params) == {"state": "failed", "limit": "5"}
    assert "r1" in listed.stdout and "triage@1.0.0" in listed.stdout and "3.0s" in listed.stdout
    assert "STEP" in shown.stdout and "WORKER" in shown.stdout and "host-2" in shown.stdout
    # The sandbox that ran the task, its CPU time, peak memory and queue/start/run times.
    assert all(part in shown.stdout for part in ("runsc-warm", "312 ms", "64.0 MiB", "4 ms", "12 ms", "1.4s"))


def test_runs_ls_shows_every_id_whole_even_when_the_table_is_too_wide() -> None:
    run_id = "01a23398-fda8-78fa-b290-5d4c0a9e7f31"
    long_run = {**LISTED, "id": run_id, "workflow": "a-workflow-with-a-name-long-enough-to-overflow@12.0.0"}
    api = API({("GET", "/v1/runs"): httpx.Response(200, json={"items": [long_run], "next_cursor": None})})

    # A terminal 60 columns wide (rich reads TTY_COMPATIBLE and COLUMNS), and a pipe.
    on_terminal = CliRunner().invoke(
        cli, ["runs", "ls"], obj=api.client, env={"TTY_COMPATIBLE": "1", "COLUMNS": "60", "NO_COLOR": "1"}
    )
    piped = af(api, "runs", "ls")

    assert on_terminal.exit_code == 0, on_terminal.output
    lines = re.sub(r"\x1b\[[0-9;]*m", "", on_terminal.stdout).splitlines()
    assert lines[1].split()[0] == run_id  # the other columns wrap onto more lines; the id never does
    assert len(lines) > 2
    created = datetime.fromisoformat(str(RUN["created_at"])).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    # Off a terminal, each row is one line whatever its width, and none ends in padding.
    assert piped.stdout.splitlines()[1].split() == [run_id, long_run["workflow"], "failed", *created.split(), "3.0s"]
    assert all(line == line.rstrip() for line in piped.stdout.splitlines())


def test_cancel_of_a_finished_run_is_one_line() -> None:
    api = API({("POST", "/v1/runs/r1/cancel"): conflict("run-finished", "run r1 has already finished")})

    assert_one_line_error(af(api, "cancel", "r1"), 1, "run r1 has already finished")


def test_workers_ls() -> None:
    api = API({("GET", "/v1/workers"): httpx.Response(200, json={"items": [WORKER]})})

    result = af(api, "workers", "ls")

    for text in ["host-1", "default,gpu", "8", "2", "runsc"]:
        assert text in result.stdout


def test_get_splits_name_and_version() -> None:
    api = API(
        {
            ("GET", "/v1/tools/echo/versions/1.0.0"): httpx.Response(200, json={**TOOL, "spec": {"runtime": {}}}),
            ("GET", "/v1/workflows/triage/versions/latest"): httpx.Response(200, json={**TOOL, "name": "triage"}),
        }
    )

    assert "echo@1.0.0" in af(api, "tool", "get", "echo@1.0.0").stdout
    assert af(api, "workflow", "get", "triage").exit_code == 0


ALL_JSON: dict[tuple[str, str], Route] = {
    ("GET", "/v1/tools"): httpx.Response(200, json={"items": [TOOL]}),
    ("GET", "/v1/tools/echo/versions/latest"): httpx.Response(200, json=TOOL),
    ("GET", "/v1/workflows"): httpx.Response(200, json={"items": []}),
    ("GET", "/v1/workflows/w/versions/latest"): httpx.Response(200, json=TOOL),
    ("GET", "/v1/runs"): httpx.Response(200, json={"items": [LISTED], "next_cursor": "c"}),
    ("GET", "/v1/runs/r1"): httpx.Response(200, json=RUN),
    ("POST", "/v1/runs"): httpx.Response(201, json=STARTED),
    ("POST", "/v1/runs/r1/cancel"): httpx.Response(200, json={**LISTED, "state": "cancelled"}),
    ("GET", "/v1/workers"): httpx.Response(200, json={"items": [WORKER]}),
}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["tool", "ls"], {"items": [TOOL]}),
        (["tool", "get", "echo"], TOOL),
        (["workflow", "ls"], {"items": []}),
        (["workflow", "get", "w"], TOOL),
        (["runs", "ls"], {"items": [LISTED], "next_cursor": "c"}),
        (["runs", "get", "r1"], RUN),
        (["run", "w"], STARTED),
        (["cancel", "r1"], {**LISTED, "state": "cancelled"}),
        (["workers", "ls"], {"items": [WORKER]}),
    ],
)
def test_output_json_prints_only_the_api_json(args: list[str], expected: Any) -> None:
    result = af(API(ALL_JSON), *args, "--output", "json")

    assert result.exit_code == 0
    assert result.stdout == json.dumps(expected, ensure_ascii=False, indent=2) + "\n"  # the same text, key for key


def test_global_flags_reach_the_client_factory() -> None:
    received: list[tuple[str | None, str | None]] = []
    api = API({("GET", "/v1/workers"): httpx.Response(200, json={"items": []})})

    def factory(api_url: str | None, token: str | None) -> Client:
        received.append((api_url, token))
        return api.client(api_url, token)

    CliRunner().invoke(cli, ["--api-url", "http://x:1", "--token", "k", "workers", "ls"], obj=factory)

    assert received == [("http://x:1", "k")]


def test_version_prints_the_installed_client_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])

    assert result.exit_code == 0
    assert result.output == f"af {metadata.version('agentflow')}\n"


def test_runs_ls_sends_the_workflow_since_and_cursor_and_names_the_next_cursor_on_stderr() -> None:
    page = {"items": [LISTED], "next_cursor": "01a23398-fda8-78fa-b290-5d4c0a9e7f31"}
    api = API({("GET", "/v1/runs"): httpx.Response(200, json=page)})
    before = datetime.now(UTC)

    listed = af(api, "runs", "ls", "--workflow", "triage@1.0.0", "--since", "2h", "--cursor", "01a2", "--limit", "1")
    as_json = af(api, "runs", "ls", "--since", "2026-12-01T09:30:00+01:00", "-o", "json")

    sent = dict(api.requests[0].url.params)
    since = datetime.fromisoformat(sent.pop("since"))
    assert sent == {"workflow": "triage@1.0.0", "cursor": "01a2", "limit": "1"}
    assert before - timedelta(hours=2, seconds=5) < since <= datetime.now(UTC) - timedelta(hours=2)
    assert "triage@1.0.0" in listed.stdout
    assert listed.stderr == f"more: the same command with --cursor {page['next_cursor']}\n"
    assert api.requests[1].url.params["since"] == "2026-12-01T09:30:00+01:00"
    assert json.loads(as_json.stdout) == page  # the API's page, as it was
    assert as_json.stderr == ""


def test_runs_ls_since_that_is_neither_an_age_nor_a_time_is_a_usage_error() -> None:
    result = af(API({}), "runs", "ls", "--since", "yesterday")

    assert result.exit_code == 2
    assert "expected a time ago (30s, 15m, 2h, 7d) or an ISO 8601 time" in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_workflow_ls_counts_a_dags_steps_an_fsms_states_and_a_trees_nodes_and_shows_no_digest() -> None:
    examples = Path(__file__).resolve().parent.parent / "examples" / "workflows"
    items = []
    for name in ("doc-review", "iterative-review", "bug-resolution", "research"):
        document = load_workflow_file(examples / f"{name}.yaml")
        items.append({**TOOL, "name": name, "kind": document["kind"], "spec": document})
    api = API({("GET", "/v1/workflows"): httpx.Response(200, json={"items": items})})

    listed = af(api, "workflow", "ls")

    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "VERSION", "KIND", "STEPS", "CREATED"]
    # doc-review: 4 steps; iterative-review: a loop of 2 steps; bug-resolution: 4 states; research: a sequence
    # of a selector (2 tool leaves), a tool leaf and a condition.
    assert [row.split()[:4] for row in rows] == [
        ["doc-review", "1.0.0", "dag", "4"],
        ["iterative-review", "1.0.0", "dag", "3"],
        ["bug-resolution", "1.0.0", "fsm", "4"],
        ["research", "1.0.0", "bt", "6"],
    ]


def sse_stream(*documents: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    """A route answering an event stream of `documents`, each with an id unless it is a `log` event."""

    def answer(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            for document in documents:
                head = "" if document["type"] == "log" else f"id: {document['seq']}\n"
                yield f"{head}event: {document['type']}\ndata: {json.dumps(document)}\n\n".encode()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    return answer


def event(seq: int, type_: str, **data: Any) -> dict[str, Any]:
    return {"seq": seq, "type": type_, "at": "2025-01-01T10:00:00Z", "data": {"step": "fetch", **data}}


def piece(seq: int, text: str, *, attempt: int = 1, truncated: bool = False) -> dict[str, Any]:
    data = {"task_id": "t1", "step": "fetch", "attempt": attempt, "seq": seq, "text": text, "truncated": truncated}
    return {"type": "log", "at": "2025-01-01T10:00:00Z", "data": data}


def test_logs_follow_asks_for_the_tools_stderr_and_prints_it_line_by_line_as_it_comes() -> None:
    stream = sse_stream(
        event(1, "task.started", task_id="t1", attempt=1),
        piece(1, "fetching "),
        piece(2, "page 1\npage"),
        piece(2, "page 1\npage"),  # given again after a reconnection
        piece(3, " 2\nalmost"),
        event(2, "task.succeeded", task_id="t1", attempt=1, stderr="page 1\npage 2\nalmost"),
        event(3, "run.succeeded"),
    )
    api = API({("GET", "/v1/runs/r1/events"): stream})

    result = af(api, "logs", "r1", "--follow")

    assert result.exit_code == 0, result.output
    assert api.requests[0].url.params["logs"] == "true"
    lines = [line.split(maxsplit=1)[1] if line[0].isdigit() else line for line in result.stdout.splitlines()]
    assert lines == [
        "task.started    fetch",
        "    [fetch] fetching page 1",
        "    [fetch] page 2",
        "    [fetch] almost",  # the attempt's unended line, with its event, whose tail repeats nothing
        "task.succeeded  fetch",
        "run.succeeded   fetch",
    ]


@pytest.mark.parametrize(
    "pieces",
    [[piece(1, "start\n", truncated=True)], [piece(2, "middle\n")]],
    ids=["cut", "its-first-pieces-no-longer-kept"],
)
def test_logs_follow_shows_the_tail_under_an_attempts_event_when_its_stream_was_not_whole(
    pieces: list[dict[str, Any]],
) -> None:
    stream = sse_stream(*pieces, event(1, "task.failed", task_id="t1", attempt=1, stderr="the end\n"))
    api = API({("GET", "/v1/runs/r1/events"): stream})

    result = af(api, "logs", "r1", "--follow")

    assert result.stdout.splitlines()[-1] == "    [fetch] the end"


def test_logs_without_follow_asks_for_no_stderr_stream() -> None:
    api = API({("GET", "/v1/runs/r1/events"): events("run.created", idle=True)})

    af(api, "logs", "r1")

    assert "logs" not in api.requests[0].url.params
