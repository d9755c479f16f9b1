"""The SDK's answers from the real stack: Client and AsyncClient return the typed objects of
`agentflow.models`, and `document()` of each is exactly the JSON the API sent, which `af --output json`
prints as it was. (tests/test_sdk_client.py decodes hand-written answers, unknown fields included.)"""

import asyncio
import json
import time
from typing import Any

import httpx
from agentflow import (
    AsyncClient,
    Client,
    Event,
    Health,
    Key,
    Page,
    Queues,
    Registered,
    Run,
    RunDetail,
    Sandbox,
    Signalled,
    SignalWait,
    StartedRun,
    Task,
    Tool,
    Worker,
    document,
    models,
)
from agentflow.cli import cli
from click.testing import CliRunner

from tests.conftest import Stack

ECHO = {
    "name": "sdk-answers-echo",
    "version": "1.0.0",
    "runtime": {
        "command": ["python3", "-c", "import json, sys; print(json.dumps({'got': json.load(sys.stdin)}))"],
    },
}
SLEEPER = {
    "name": "sdk-answers-sleeper",
    "version": "1.0.0",
    "runtime": {"command": ["python3", "-c", "import time; time.sleep(60); print('{}')"]},
}


def raw(stack: Stack, path: str, **params: Any) -> Any:
    """What the API answers at `path`, as JSON decoded by the standard library alone."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    answer = httpx.get(f"{stack.api_url}{path}", params=params, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_client_answers_typed_objects_whose_documents_are_the_api_json(client: Client, stack: Stack) -> None:
    stored = client.register_tool(ECHO)
    again = client.register_tool(ECHO)
    assert isinstance(stored, Registered) and isinstance(stored.value, Tool) and not again.created
    assert (stored.value.name, stored.value.version) == ("sdk-answers-echo", "1.0.0")
    tool = client.get_tool("sdk-answers-echo")
    assert tool == again.value and len(tool.digest) == 64 and tool.created_at.tzinfo is not None
    assert all(isinstance(listed, Tool) for listed in client.list_tools())

    started = client.start_run(tool="sdk-answers-echo@1.0.0", input={"n": 1})
    assert isinstance(started, StartedRun) and started.created
    events = list(client.events(started.id))
    assert all(isinstance(event, Event) for event in events) and events[-1].final
    assert [event.seq for event in events] == sorted(event.seq for event in events if event.seq is not None)
    run = client.wait_run(started.id, timeout=60)
    assert isinstance(run, RunDetail) and run.state == "succeeded" and run.finished
    assert run.output == {"got": {"n": 1}} and run.target == "sdk-answers-echo@1.0.0"
    (task,) = run.tasks
    assert isinstance(task, Task) and task.state == "succeeded" and task.attempt == 1
    assert isinstance(task.sandbox, Sandbox) and task.sandbox.timing.run_seconds is not None
    assert task.finished_at is not None and task.started_at is not None and task.finished_at >= task.started_at

    # The documents are the API's JSON to the byte: keys, their order, times as the API spelled them.
    assert json.dumps(document(run)) == json.dumps(raw(stack, f"/v1/runs/{run.id}"))
    assert json.dumps(document(tool)) == json.dumps(raw(stack, "/v1/tools/sdk-answers-echo/versions/latest"))
    page = client.list_runs(limit=3)
    assert isinstance(page, Page) and all(type(listed) is Run for listed in page.items)
    assert json.dumps(document(page)) == json.dumps(raw(stack, "/v1/runs", limit=3))
    assert json.dumps(document(events)) == json.dumps([e for e in _stream(stack, run.id)])

    workers = client.list_workers()
    assert workers and all(isinstance(worker, Worker) and worker.queues for worker in workers)
    assert isinstance(client.list_queues(), Queues)
    assert all(isinstance(key, Key) for key in client.list_keys())
    assert client.health() == Health(status="ok", stack_id=raw(stack, "/healthz")["stack_id"])

    # af --output json prints the document: the API's answer, exactly.
    runner = CliRunner()
    shown = runner.invoke(cli, ["runs", "get", run.id, "-o", "json"], obj=lambda url, token: stack.client())
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == json.dumps(raw(stack, f"/v1/runs/{run.id}"), ensure_ascii=False, indent=2) + "\n"


def _stream(stack: Stack, run_id: str) -> list[Any]:
    """A finished run's events as the API's event stream sends them (each SSE message's data, as JSON)."""
    headers = {"Authorization": f"Bearer {stack.token}", "Accept": "text/event-stream"}
    answer = httpx.get(f"{stack.api_url}/v1/runs/{run_id}/events", headers=headers, timeout=30)
    return [json.loads(line[len("data:") :]) for line in answer.text.splitlines() if line.startswith("data:")]


async def test_the_async_client_answers_the_same_typed_objects(stack: Stack, examples_registered: None) -> None:
    async with AsyncClient(api_url=stack.api_url, token=stack.token) as af:
        started = await af.start_run(workflow="approval", input={"text": "Typed answers ship."})
        assert isinstance(started, StartedRun)
        run = await _waiting(af, started.id)
        (wait,) = run.waiting
        assert isinstance(wait, SignalWait) and "approve" in wait.signals and wait.step == "await_approval"
        taken = await af.signal_run(run.id, "approve", {"by": "sdk-test"})
        assert taken == Signalled(run_id=run.id, signal="approve", step="await_approval")
        done = await af.wait_run(run.id, timeout=60)
        assert isinstance(done, RunDetail) and done.state == "succeeded" and done.waiting == ()
        assert {task.step for task in done.tasks} == {"draft", "await_approval", "publish"}
        events = [event async for event in af.events(run.id)]
        assert all(isinstance(event, Event) for event in events) and events[-1].type == "run.succeeded"
        assert [found.id async for found in af.iter_runs(limit=2) if found.id == run.id] == [run.id]

        await af.register_tool(SLEEPER)
        sleeping = await af.start_run(tool="sdk-answers-sleeper@1.0.0")
        cancelled = await af.cancel_run(sleeping.id)
        assert type(cancelled) is Run and cancelled.state == "cancelled" and cancelled.finished_at is not None


async def _waiting(af: AsyncClient, run_id: str) -> models.RunDetail:
    """The run once it waits for a signal."""
    deadline = time.monotonic() + 60
    while not (run := await af.get_run(run_id)).waiting:
        assert time.monotonic() < deadline and not run.finished, f"run {run_id} never waited: {run.state}"
        await asyncio.sleep(0.1)
    return run
