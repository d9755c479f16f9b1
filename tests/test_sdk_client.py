"""Client and AsyncClient against httpx.MockTransport: requests as the API contract has them, answers
decoded into the typed objects of `agentflow.models` and problem+json into exceptions, event streams followed
across reconnections. (tests/test_sdk_answers.py has the same answers from the real stack.)"""

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from agentflow import (
    AgentFlowError,
    APIError,
    AsyncClient,
    Client,
    Conflict,
    Event,
    Health,
    NotFound,
    Page,
    RefusedRun,
    Run,
    RunDetail,
    StartedRun,
    Tool,
    TransportError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
    Worker,
    document,
    models,
)

API = "http://af.test"
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> Client:
    return Client(API, "secret", transport=httpx.MockTransport(handler))


def async_client(handler: Handler) -> AsyncClient:
    return AsyncClient(API, "secret", transport=httpx.MockTransport(handler))


def problem(status: int, slug: str, detail: str, field: str | None = None) -> httpx.Response:
    body = {
        "type": f"urn:agentflow:problem:{slug}",
        "title": slug,
        "status": status,
        "detail": detail,
        "field": field,
    }
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


def event(seq: int, type_: str, **data: Any) -> bytes:
    document = {"seq": seq, "type": type_, "at": "2025-01-01T00:00:00Z", "data": data}
    return f"id: {seq}\nevent: {type_}\ndata: {json.dumps(document)}\n\n".encode()


def sse(*chunks: bytes, then: Exception | None = None) -> httpx.Response:
    """An event stream of `chunks`, which ends with `then` raised when given (a cut, an idle stream)."""

    def body() -> Iterator[bytes]:
        yield from chunks
        if then is not None:
            raise then

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


AT = "2025-01-01T00:00:00+00:00"


def run_doc(run_id: str, **fields: Any) -> dict[str, Any]:
    """A run as the API lists it."""
    run = {"id": run_id, "tenant": "default", "workflow": None, "tool": "echo@1.0.0", "agent": None}
    run |= {"state": "succeeded", "input": {"n": 1}, "output": {"n": 2}, "error": None}
    return run | {"created_at": AT, "updated_at": AT, "finished_at": AT, **fields}


RUN = run_doc("r1", tasks=[], usage=None, waiting=[])
"""A run as the API reads it alone: with its tasks, usage and waits."""


def entry_doc(name: str, version: str = "1.0.0", **fields: Any) -> dict[str, Any]:
    """A tool's or workflow's version as the API answers it."""
    return {"tenant": "default", "name": name, "version": version, "spec": {"name": name}} | {
        "digest": "sha256:x",
        "created_at": AT,
        **fields,
    }


WORKER = {
    "tenant": "default",
    "queues": ["default"],
    "concurrency": 4,
    "in_flight": 0,
    "sandbox": "process",
    "pid": 7,
    "host": "h",
    "started_at": AT,
    "metrics_port": 0,
    "holding": [],
    "id": "w1",
    "last_heartbeat": AT,
}


@pytest.mark.parametrize(
    ("status", "slug", "error"),
    [
        (404, "unknown-tool", NotFound),
        (404, "unknown-workflow", NotFound),
        (404, "not-found", NotFound),
        (409, "duplicate-version", Conflict),
        (409, "idempotency-conflict", Conflict),
        (409, "run-finished", Conflict),
        (422, "invalid-name", ValidationFailed),
        (422, "bad-version", ValidationFailed),
        (400, "malformed-json", ValidationFailed),
        (422, "validation-error", ValidationFailed),
        (422, "input-schema-mismatch", ValidationFailed),
        (401, "unauthorized", Unauthorized),
        (503, "unavailable", APIError),
        (500, "internal", APIError),
    ],
)
def test_problems_map_to_exceptions_by_type(status: int, slug: str, error: type[APIError]) -> None:
    answer = problem(status, slug, "it went wrong", "spec.name")
    with client(lambda request: answer) as af, pytest.raises(error) as caught:
        af.get_tool("echo")

    exc = caught.value
    assert type(exc) is error
    assert (exc.status, exc.slug, exc.detail, exc.field) == (status, slug, "it went wrong", "spec.name")
    assert exc.type == f"urn:agentflow:problem:{slug}"
    assert str(exc) == "it went wrong (field: spec.name)"


def test_errors_without_a_problem_body_fall_back_on_the_status() -> None:
    html = httpx.Response(404, text="<html>nope</html>")
    with (
        client(lambda request: html) as af,
        pytest.raises(NotFound, match=r"^the API answered HTTP 404 Not Found$"),
    ):
        af.get_run("r1")
    with (
        client(lambda request: httpx.Response(502, text="bad gateway")) as af,
        pytest.raises(APIError) as caught,
    ):
        af.health()
    assert type(caught.value) is APIError
    assert caught.value.field is None


def test_unreachable_api_is_a_transport_error_naming_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with client(refuse) as af, pytest.raises(TransportError) as caught:
        af.list_tools()

    assert str(caught.value) == (
        f"cannot reach the AgentFlow API at {API}: [Errno 111] Connection refused"
        " (is the stack up? af status shows it; af up starts it or what exited)"
    )


def test_register_tool_tells_created_from_unchanged_and_sends_the_token() -> None:
    seen: list[httpx.Request] = []
    statuses = iter([201, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(statuses), json=entry_doc("echo"))

    with client(handler) as af:
        first = af.register_tool({"name": "echo", "version": "1.0.0"})
        second = af.register_tool({"name": "echo", "version": "1.0.0"})

    assert (first.created, second.created) == (True, False)
    assert isinstance(first.value, Tool) and (first.value.name, first.value.version) == ("echo", "1.0.0")
    assert document(first) == entry_doc("echo")
    assert [(r.method, str(r.url)) for r in seen] == [("POST", f"{API}/v1/tools")] * 2
    assert seen[0].headers["authorization"] == "Bearer secret"
    assert json.loads(seen[0].content) == {"name": "echo", "version": "1.0.0"}


def test_read_routes() -> None:
    routes = {
        "/v1/tools": {"items": [entry_doc("a")]},
        "/v1/workflows": {"items": [entry_doc("w", kind="dag")]},
        "/v1/workers": {"items": [WORKER]},
        "/v1/tools/echo/versions/latest": entry_doc("echo"),
        "/v1/workflows/triage/versions/1.0.0": entry_doc("triage", kind="fsm"),
        "/v1/runs/r%2F1": {**RUN, "id": "r/1"},
        "/healthz": {"status": "ok", "stack_id": "s1"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=routes[request.url.raw_path.decode()])

    with client(handler) as af:
        assert [tool.name for tool in af.list_tools()] == ["a"]
        assert [(w.name, w.kind) for w in af.list_workflows()] == [("w", "dag")]
        (worker,) = af.list_workers()
        assert isinstance(worker, Worker) and worker.id == "w1" and worker.queues == ("default",)
        assert af.get_tool("echo").created_at == datetime(2025, 1, 1, tzinfo=UTC)
        assert af.get_workflow("triage", "1.0.0").kind == "fsm"
        run = af.get_run("r/1")
        assert isinstance(run, RunDetail) and run.id == "r/1" and run.tasks == () and run.finished
        assert af.health() == Health(status="ok", stack_id="s1")
        assert document(af.list_workers()) == [WORKER] and document(run) == routes["/v1/runs/r%2F1"]


def test_start_run_sends_target_input_queue_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "r1", "state": "running", "created": False})

    with client(handler) as af:
        run = af.start_run(workflow="triage@1.0.0", input={"x": 1}, idempotency_key="k1", queue="gpu")
        af.start_run(tool="echo")

    assert run == StartedRun(id="r1", state="running", created=False)
    assert json.loads(seen[0].content) == {"workflow": "triage@1.0.0", "input": {"x": 1}, "queue": "gpu"}
    assert seen[0].headers["idempotency-key"] == "k1"
    assert json.loads(seen[1].content) == {"tool": "echo"}
    assert "idempotency-key" not in seen[1].headers


@pytest.mark.parametrize("targets", [{}, {"workflow": "w", "tool": "t"}])
def test_start_run_takes_exactly_one_target(targets: dict[str, str]) -> None:
    with client(lambda request: httpx.Response(500)) as af, pytest.raises(ValueError, match="exactly one"):
        af.start_run(**targets)


def test_start_runs_posts_a_batch_and_answers_per_item() -> None:
    refusal = {"type": "urn:agentflow:problem:not-found", "title": "Not found", "status": 404, "detail": "no tool"}
    answer = [{"id": "r1", "state": "pending", "created": True}, {"problem": {**refusal, "field": "tool"}}]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": answer})

    items = [{"tool": "echo", "input": 1, "idempotency_key": "a"}, {"tool": "nope", "input": 2}]
    with client(handler) as af:
        started, refused = af.start_runs(items)

    assert started == StartedRun(id="r1", state="pending", created=True)
    assert isinstance(refused, RefusedRun) and refused.problem.status == 404 and refused.problem.field == "tool"
    assert document(refused) == {"problem": {**refusal, "field": "tool", "problems": None}}

    assert seen[0].url.path == "/v1/runs:batch"
    assert json.loads(seen[0].content) == {"runs": items}


def test_iter_runs_follows_cursors() -> None:
    pages = {
        None: {"items": [run_doc("r3"), run_doc("r2")], "next_cursor": "c1"},
        "c1": {"items": [run_doc("r1")], "next_cursor": None},
    }
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with client(handler) as af:
        assert [run.id for run in af.iter_runs(state="failed", limit=2)] == ["r3", "r2", "r1"]
        page = af.list_runs("failed", 2)
        assert isinstance(page, Page) and all(type(run) is Run for run in page.items) and page.next_cursor == "c1"

    assert seen[:2] == [{"state": "failed", "limit": "2"}, {"state": "failed", "limit": "2", "cursor": "c1"}]


def test_events_end_at_the_final_event() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/runs/r1/events"
        assert "last-event-id" not in request.headers
        return sse(event(1, "run.created"), event(2, "task.queued", step="a"), event(3, "run.succeeded"))

    with client(handler) as af:
        events = list(af.events("r1"))

    assert [e.type for e in events] == ["run.created", "task.queued", "run.succeeded"]
    assert events[1] == Event(seq=2, type="task.queued", at=datetime(2025, 1, 1, tzinfo=UTC), data={"step": "a"})
    assert [e.final for e in events] == [False, False, True]


def test_events_resume_after_a_cut_from_the_last_event_seen() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) == 1:
            return sse(event(4, "task.queued"), then=httpx.RemoteProtocolError("peer closed connection"))
        return sse(event(5, "run.failed", error="boom"))

    with client(handler) as af:
        assert [e.seq for e in af.events("r1", last_event_id="3")] == [4, 5]

    assert seen == ["3", "4"]


def test_events_stop_when_a_stream_ends_with_nothing_new() -> None:
    with client(lambda request: sse()) as af:
        assert list(af.events("r1")) == []


def test_events_stop_after_idle_timeout_only_when_asked() -> None:
    idle = httpx.ReadTimeout("timed out")
    with client(lambda request: sse(event(1, "run.created"), then=idle)) as af:
        assert [e.seq for e in af.events("r1", idle_timeout=0.5)] == [1]
        with pytest.raises(TransportError):
            list(af.events("r1"))


KEEP_ALIVE = b": keep-alive\nid: 1\n\n"
"""What the server sends while a run is quiet: no data, the last event's id again."""


def test_keep_alives_are_no_events() -> None:
    stream = sse(KEEP_ALIVE, event(1, "run.created"), KEEP_ALIVE, KEEP_ALIVE, event(2, "run.succeeded"))
    with client(lambda request: stream) as af:
        assert [e.seq for e in af.events("r1")] == [1, 2]


def test_keep_alives_do_not_hold_off_the_idle_timeout() -> None:
    def endless() -> Iterator[bytes]:
        yield event(1, "run.created")
        while True:
            yield KEEP_ALIVE

    answer = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=endless())
    with client(lambda request: answer) as af:
        assert [e.seq for e in af.events("r1", idle_timeout=0.05)] == [1]


def test_events_of_a_finished_run_resumed_at_its_end_are_none() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        return httpx.Response(204)

    with client(handler) as af:
        assert list(af.events("r1", last_event_id="7")) == []
    assert seen == ["7"]


def test_events_of_an_unknown_run_raise_the_problem() -> None:
    answer = problem(404, "not-found", "no run r9")
    with client(lambda request: answer) as af, pytest.raises(NotFound, match="no run r9"):
        list(af.events("r9"))


def test_wait_run_reads_the_run_after_its_final_event() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return sse(event(1, "run.succeeded"))
        return httpx.Response(200, json=RUN)

    with client(handler) as af:
        assert document(af.wait_run("r1")) == RUN


def test_wait_run_gives_up_when_the_run_is_still_going() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return sse(event(1, "run.created"), then=httpx.ReadTimeout("idle"))
        return httpx.Response(200, json={**RUN, "state": "running"})

    with client(handler) as af, pytest.raises(WaitTimeout, match=r"^run r1 is still running after 2 s$"):
        af.wait_run("r1", timeout=2)


class TestAsyncClient:
    async def test_same_requests_and_answers(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                return httpx.Response(201, json={"id": "r1", "state": "running", "created": True})
            return problem(409, "run-finished", "run r1 has finished")

        async with async_client(handler) as af:
            run = await af.start_run(tool="echo@1", input=[1])
            with pytest.raises(Conflict, match="run r1 has finished"):
                await af.get_run("r1")

        assert run.created and run.id == "r1"

    async def test_iter_runs_follows_cursors(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.params.get("cursor") == "c1":
                return httpx.Response(200, json={"items": [run_doc("r1")], "next_cursor": None})
            return httpx.Response(200, json={"items": [run_doc("r2")], "next_cursor": "c1"})

        async with async_client(handler) as af:
            assert [run.id async for run in af.iter_runs()] == ["r2", "r1"]

    async def test_events_resume_and_wait_run(self) -> None:
        calls: list[str | None] = []

        def handler(request: httpx.Request) -> httpx.Response:
            if not request.url.path.endswith("/events"):
                return httpx.Response(200, json=RUN)
            calls.append(request.headers.get("last-event-id"))
            if len(calls) == 1:
                return async_sse(event(1, "run.created"), then=httpx.ReadError("reset"))
            return async_sse(event(2, "run.succeeded"))

        async with async_client(handler) as af:
            assert [e.seq async for e in af.events("r1")] == [1, 2]
            calls.clear()
            assert document(await af.wait_run("r1")) == RUN

    async def test_events_skip_keep_alives_and_end_on_204(self) -> None:
        answers = [async_sse(KEEP_ALIVE, event(1, "run.created"), KEEP_ALIVE), httpx.Response(204)]

        async with async_client(lambda request: answers.pop(0)) as af:
            assert [e.seq async for e in af.events("r1")] == [1]
        assert answers == []

    async def test_unreachable(self) -> None:
        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused")

        async with async_client(refuse) as af:
            with pytest.raises(TransportError, match=r"cannot reach the AgentFlow API at http://af.test: refused"):
                await af.list_workers()


def async_sse(*chunks: bytes, then: Exception | None = None) -> httpx.Response:
    async def body() -> Any:
        for chunk in chunks:
            yield chunk
        if then is not None:
            raise then

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())


def test_an_answer_with_fields_unknown_to_the_sdk_still_decodes() -> None:
    """A newer server's answer, with fields this SDK does not know at every level, decodes; they are dropped."""
    task = {
        "id": "t1",
        "step": "a",
        "element": "",
        "tool": "echo@1.0.0",
        "queue": "default",
        "attempt": 1,
        "state": "succeeded",
        "input": {},
        "output": {"n": 2},
        "error": None,
        "detail": None,
        "worker_id": "w1",
        "created_at": AT,
        "started_at": AT,
        "finished_at": AT,
        "sandbox": {
            "kind": "runsc",
            "cpu_seconds": 0.25,
            "max_rss_kb": 2048,
            "timing": {"queue_seconds": 0.01, "start_seconds": 0.1, "run_seconds": 0.5, "gpu_seconds": 0.0},
            "platform": "systrap",
        },
        "cost_usd": 0.001,
    }
    newer = {**RUN, "tasks": [task], "priority": 3, "labels": {"team": "ops"}}

    run = models.decode_as(RunDetail, json.dumps(newer), "a newer server's run")

    assert run.tasks[0].sandbox is not None and run.tasks[0].sandbox.timing.run_seconds == 0.5
    assert run.tasks[0].sandbox.max_rss_kb == 2048 and run.output == {"n": 2}
    sandbox = {k: v for k, v in task["sandbox"].items() if k != "platform"}
    sandbox["timing"] = {k: v for k, v in sandbox["timing"].items() if k != "gpu_seconds"}
    known = {k: v for k, v in task.items() if k != "cost_usd"} | {"sandbox": sandbox}
    assert document(run) == {**RUN, "tasks": [known]}  # what it does not know, it drops, at every level


def test_an_answer_missing_a_field_names_it() -> None:
    missing = r"GET /v1/runs/r1 does not fit the SDK's RunDetail: Object missing required field `tenant`"
    with (
        client(lambda request: httpx.Response(200, json={"id": "r1", "state": "running"})) as af,
        pytest.raises(AgentFlowError, match=missing),
    ):
        af.get_run("r1")


def test_document_gives_the_api_json_back_and_indexing_reads_it() -> None:
    run = models.decode_as(RunDetail, json.dumps(RUN), "a run")
    assert json.dumps(document(run)) == json.dumps(RUN)  # the same keys, order and spelling of times
    assert run["created_at"] == AT and run.created_at == datetime(2025, 1, 1, tzinfo=UTC)
    assert run.get("usage") is None and run.get("nothing", "none") == "none"
    started = models.decode_as(StartedRun, '{"id": "r1", "state": "pending", "created": true}', "a start")
    assert document(started) == {"id": "r1", "state": "pending", "created": True}  # no warnings: none sent
