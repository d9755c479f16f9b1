"""Client and AsyncClient against httpx.MockTransport: requests as the API contract has them, answers and
problem+json decoded, event streams followed across reconnections."""

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from agentflow import (
    APIError,
    AsyncClient,
    Client,
    Conflict,
    NotFound,
    TransportError,
    Unauthorized,
    ValidationFailed,
    WaitTimeout,
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


RUN = {"id": "r1", "state": "succeeded", "output": {"n": 2}, "tasks": []}


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
        return httpx.Response(next(statuses), json={"name": "echo", "version": "1.0.0", "digest": "sha256:x"})

    with client(handler) as af:
        first = af.register_tool({"name": "echo", "version": "1.0.0"})
        second = af.register_tool({"name": "echo", "version": "1.0.0"})

    assert (first.created, second.created) == (True, False)
    assert first == {"name": "echo", "version": "1.0.0", "digest": "sha256:x"}
    assert [(r.method, str(r.url)) for r in seen] == [("POST", f"{API}/v1/tools")] * 2
    assert seen[0].headers["authorization"] == "Bearer secret"
    assert json.loads(seen[0].content) == {"name": "echo", "version": "1.0.0"}


def test_read_routes() -> None:
    routes = {
        "/v1/tools": {"items": [{"name": "a"}]},
        "/v1/workflows": {"items": [{"name": "w"}]},
        "/v1/workers": {"items": [{"id": "w1"}]},
        "/v1/tools/echo/versions/latest": {"name": "echo"},
        "/v1/workflows/triage/versions/1.0.0": {"name": "triage"},
        "/v1/runs/r%2F1": {"id": "r/1"},
        "/healthz": {"status": "ok"},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=routes[request.url.raw_path.decode()])

    with client(handler) as af:
        assert af.list_tools() == [{"name": "a"}]
        assert af.list_workflows() == [{"name": "w"}]
        assert af.list_workers() == [{"id": "w1"}]
        assert af.get_tool("echo") == {"name": "echo"}
        assert af.get_workflow("triage", "1.0.0") == {"name": "triage"}
        assert af.get_run("r/1") == {"id": "r/1"}
        assert af.health() == {"status": "ok"}


def test_start_run_sends_target_input_queue_and_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "r1", "state": "running", "created": False})

    with client(handler) as af:
        run = af.start_run(workflow="triage@1.0.0", input={"x": 1}, idempotency_key="k1", queue="gpu")
        af.start_run(tool="echo")

    assert run["id"] == "r1" and run.created is False
    assert json.loads(seen[0].content) == {"workflow": "triage@1.0.0", "input": {"x": 1}, "queue": "gpu"}
    assert seen[0].headers["idempotency-key"] == "k1"
    assert json.loads(seen[1].content) == {"tool": "echo"}
    assert "idempotency-key" not in seen[1].headers


@pytest.mark.parametrize("targets", [{}, {"workflow": "w", "tool": "t"}])
def test_start_run_takes_exactly_one_target(targets: dict[str, str]) -> None:
    with client(lambda request: httpx.Response(500)) as af, pytest.raises(ValueError, match="exactly one"):
        af.start_run(**targets)


def test_start_runs_posts_a_batch_and_answers_per_item() -> None:
    answer = [{"id": "r1"}, {"problem": {"type": "urn:agentflow:problem:unknown-tool", "status": 404}}]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": answer})

    items = [{"tool": "echo", "input": 1, "idempotency_key": "a"}, {"tool": "nope", "input": 2}]
    with client(handler) as af:
        assert af.start_runs(items) == answer

    assert seen[0].url.path == "/v1/runs:batch"
    assert json.loads(seen[0].content) == {"runs": items}


def test_iter_runs_follows_cursors() -> None:
    pages = {
        None: {"items": [{"id": "r3"}, {"id": "r2"}], "next_cursor": "c1"},
        "c1": {"items": [{"id": "r1"}], "next_cursor": None},
    }
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(dict(request.url.params))
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    with client(handler) as af:
        assert [run["id"] for run in af.iter_runs(state="failed", limit=2)] == ["r3", "r2", "r1"]

    assert seen == [{"state": "failed", "limit": "2"}, {"state": "failed", "limit": "2", "cursor": "c1"}]


def test_events_end_at_the_final_event() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/runs/r1/events"
        assert "last-event-id" not in request.headers
        return sse(event(1, "run.created"), event(2, "task.queued", step="a"), event(3, "run.succeeded"))

    with client(handler) as af:
        events = list(af.events("r1"))

    assert [e["type"] for e in events] == ["run.created", "task.queued", "run.succeeded"]
    assert events[1] == {"seq": 2, "type": "task.queued", "at": "2025-01-01T00:00:00Z", "data": {"step": "a"}}


def test_events_resume_after_a_cut_from_the_last_event_seen() -> None:
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("last-event-id"))
        if len(seen) == 1:
            return sse(event(4, "task.queued"), then=httpx.RemoteProtocolError("peer closed connection"))
        return sse(event(5, "run.failed", error="boom"))

    with client(handler) as af:
        assert [e["seq"] for e in af.events("r1", last_event_id="3")] == [4, 5]

    assert seen == ["3", "4"]


def test_events_stop_when_a_stream_ends_with_nothing_new() -> None:
    with client(lambda request: sse()) as af:
        assert list(af.events("r1")) == []


def test_events_stop_after_idle_timeout_only_when_asked() -> None:
    idle = httpx.ReadTimeout("timed out")
    with client(lambda request: sse(event(1, "run.created"), then=idle)) as af:
        assert [e["seq"] for e in af.events("r1", idle_timeout=0.5)] == [1]
        with pytest.raises(TransportError):
            list(af.events("r1"))


KEEP_ALIVE = b": keep-alive\nid: 1\n\n"
"""What the server sends while a run is quiet: no data, the last event's id again."""


def test_keep_alives_are_no_events() -> None:
    stream = sse(KEEP_ALIVE, event(1, "run.created"), KEEP_ALIVE, KEEP_ALIVE, event(2, "run.succeeded"))
    with client(lambda request: stream) as af:
        assert [e["seq"] for e in af.events("r1")] == [1, 2]


def test_keep_alives_do_not_hold_off_the_idle_timeout() -> None:
    def endless() -> Iterator[bytes]:
        yield event(1, "run.created")
        while True:
            yield KEEP_ALIVE

    answer = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=endless())
    with client(lambda request: answer) as af:
        assert [e["seq"] for e in af.events("r1", idle_timeout=0.05)] == [1]


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
        assert af.wait_run("r1") == RUN


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

        assert run.created and run["id"] == "r1"

    async def test_iter_runs_follows_cursors(self) -> None:
        def handler(request: httpx.Request) -> httpx.Response:
            if request.url.params.get("cursor") == "c1":
                return httpx.Response(200, json={"items": [{"id": "r1"}], "next_cursor": None})
            return httpx.Response(200, json={"items": [{"id": "r2"}], "next_cursor": "c1"})

        async with async_client(handler) as af:
            assert [run["id"] async for run in af.iter_runs()] == ["r2", "r1"]

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
            assert [e["seq"] async for e in af.events("r1")] == [1, 2]
            calls.clear()
            assert await af.wait_run("r1") == RUN

    async def test_events_skip_keep_alives_and_end_on_204(self) -> None:
        answers = [async_sse(KEEP_ALIVE, event(1, "run.created"), KEEP_ALIVE), httpx.Response(204)]

        async with async_client(lambda request: answers.pop(0)) as af:
            assert [e["seq"] async for e in af.events("r1")] == [1]
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
