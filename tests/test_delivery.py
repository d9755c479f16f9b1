"""Delivery with real processes: what reaches the bus twice, late, out of date or malformed changes a run's
state once or not at all, and a worker never drops a task (not on bad input, not when it is stopped).

Messages are published straight to JetStream with nats-py, as a buggy or hostile publisher would. Where a
test must know that the other side has dealt with a message, it waits for that consumer's acknowledgement
floor to pass the message's stream sequence, never for a fixed time.
"""

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from agentflow import AsyncClient, Conflict
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from bus import subjects
from bus.messages import Result, encode
from control_plane.stack.processes import alive, stop
from tests.conftest import Stack, eventually, noop_task, wait_until_pulled

TENANT = "default"
WAIT_SECONDS = 20.0


@pytest.fixture(scope="module")
async def js(stack: Stack) -> AsyncIterator[JetStreamContext]:
    nc: NATS = await nats.connect(stack.nats_url, name="test-delivery")
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


@pytest.fixture(scope="module")
async def af(stack: Stack) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(api_url=stack.api_url, token=stack.token) as client:
        yield client


async def acknowledged(js: JetStreamContext, stream: str, consumer: str, seq: int) -> None:
    """Wait until ``consumer`` has acknowledged (or terminated) every message of ``stream`` up to ``seq``."""

    async def passed() -> bool:
        info = await js.consumer_info(stream, consumer)
        return info.ack_floor is not None and info.ack_floor.stream_seq >= seq

    await eventually(f"{consumer} on {stream} to acknowledge sequence {seq}", passed)


async def publish(js: JetStreamContext, subject: str, payload: bytes, msg_id: str | None = None) -> int:
    ack = await js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id or f"test-{uuid.uuid4()}"})
    return ack.seq


async def events_of(af: AsyncClient, run_id: str) -> list[dict[str, Any]]:
    return [event async for event in af.events(run_id, idle_timeout=0.5)]


def worker_log(stack: Stack, worker_id: str) -> str:
    return (stack.root / "logs" / f"{worker_id}.log").read_text(errors="replace")


async def worker_id_of(af: AsyncClient, process: subprocess.Popen[bytes]) -> str:
    """The id the worker registered under, found by its PID in the fleet."""

    async def registered() -> str | None:
        return next((w["id"] for w in await af.list_workers() if w["pid"] == process.pid), None)

    worker_id: str = await eventually(f"worker pid {process.pid} to register", registered)
    return worker_id


def result_for(run_id: str, task_id: str, attempt: int, output: Any) -> Result:
    now = time.time()
    return Result(
        tenant=TENANT,
        run_id=run_id,
        task_id=task_id,
        attempt=attempt,
        ok=True,
        output=msgspec.Raw(msgspec.json.encode(output)),
        worker_id="test-impostor",
        sandbox="builtin",
        started_at=now,
        finished_at=now,
    )


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        stop(process.pid, timeout=15)
    process.wait(timeout=15)


# --- malformed tasks --------------------------------------------------------------------------------


async def test_a_malformed_task_message_does_not_stop_the_worker(
    stack: Stack, js: JetStreamContext, af: AsyncClient
) -> None:
    queue = "malformed"
    process = stack.start_worker(queue=queue, concurrency=2)
    try:
        worker_id = await worker_id_of(af, process)
        subject = subjects.tasks(TENANT, queue)
        future_version = noop_task(TENANT, v=99)
        last = 0
        for payload in (b"\x00\xffnot json at all", b'{"hello": "a task of the wrong shape"}', encode(future_version)):
            last = await publish(js, subject, payload)
        await acknowledged(js, subjects.TASKS_STREAM, subjects.task_consumer(TENANT, queue), last)

        run = await af.start_run(tool="noop", input={"after": "garbage"}, queue=queue)
        final = await af.wait_run(run["id"], timeout=WAIT_SECONDS)

        assert final["state"] == "succeeded", final
        assert final["output"] == {"after": "garbage"}
        assert final["tasks"][0]["worker_id"] == worker_id
        assert process.poll() is None, "the worker exited"
        log = worker_log(stack, worker_id)
        assert log.count(f"terminating a malformed task message on {subject}") == 3, log
        assert "unsupported message version 99" in log
    finally:
        stop_worker(process)


# --- results delivered more than once, late or for nothing ------------------------------------------


async def test_a_result_delivered_twice_is_applied_once(js: JetStreamContext, af: AsyncClient) -> None:
    run = await af.start_run(tool="noop", input={"original": True})
    before = await af.wait_run(run["id"], timeout=WAIT_SECONDS)
    assert before["state"] == "succeeded"
    events_before = await events_of(af, run["id"])
    (task,) = before["tasks"]
    subject = subjects.results(TENANT, run["id"])
    forged = encode(result_for(run["id"], task["id"], task["attempt"], {"tampered": True}))

    # With the worker's own message id, the stream itself drops the copy ...
    same_id = await js.publish(subject, forged, headers={"Nats-Msg-Id": f"{task['id']}:{task['attempt']}:result"})
    assert same_id.duplicate is True
    # ... and with another id it reaches the control plane, which must ignore it.
    seq = await publish(js, subject, forged, msg_id=f"{task['id']}:{task['attempt']}:result:again")
    await acknowledged(js, subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER, seq)

    after = await af.get_run(run["id"])
    assert after == before
    assert after["output"] == {"original": True}
    assert await events_of(af, run["id"]) == events_before


async def test_a_result_of_a_stale_attempt_is_ignored_and_the_task_stays_queued(
    js: JetStreamContext, af: AsyncClient
) -> None:
    run = await af.start_run(tool="noop", input={}, queue="nobody-pulls-stale")
    try:
        before = await af.get_run(run["id"])
        (task,) = before["tasks"]
        assert (task["state"], task["attempt"]) == ("queued", 1)
        events_before = await events_of(af, run["id"])

        stale = result_for(run["id"], task["id"], 2, {"from": "attempt 2"})
        seq = await publish(js, subjects.results(TENANT, run["id"]), encode(stale))
        await acknowledged(js, subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER, seq)

        after = await af.get_run(run["id"])
        assert after == before
        assert after["state"] == "running"
        assert [(t["state"], t["attempt"]) for t in after["tasks"]] == [("queued", 1)]
        assert await events_of(af, run["id"]) == events_before
    finally:
        await af.cancel_run(run["id"])


async def test_results_of_unknown_runs_and_malformed_results_do_not_stop_the_control_plane(
    js: JetStreamContext, af: AsyncClient
) -> None:
    ghost = str(uuid.uuid4())
    await publish(js, subjects.results(TENANT, ghost), encode(result_for(ghost, str(uuid.uuid4()), 1, {})))
    await publish(js, subjects.results(TENANT, ghost), b'{"not": "a result"}')
    seq = await publish(js, subjects.results(TENANT, ghost), b"\x00garbage")
    await acknowledged(js, subjects.RESULTS_STREAM, subjects.RESULTS_CONSUMER, seq)

    run = await af.start_run(tool="noop", input={"still": "working"})
    final = await af.wait_run(run["id"], timeout=WAIT_SECONDS)
    assert final["state"] == "succeeded"
    assert final["output"] == {"still": "working"}


# --- workers starting late and stopping ------------------------------------------------------------


def sleeper(name: str, seconds: float) -> dict[str, Any]:
    """A tool that sleeps ``seconds`` and then answers ``{"slept": true}``."""
    code = f"import json, time; time.sleep({seconds}); print(json.dumps({{'slept': True}}))"
    return {
        "name": name,
        "version": "1.0.0",
        "runtime": {"command": ["python3", "-c", code]},
        "limits": {"wall_seconds": 60},
    }


async def test_a_worker_draining_on_sigterm_finishes_its_task_in_flight(
    stack: Stack, js: JetStreamContext, af: AsyncClient
) -> None:
    queue = "drain"
    await af.register_tool(sleeper("sleeps-then-answers", 1.5))
    process = stack.start_worker(queue=queue, concurrency=2)
    try:
        worker_id = await worker_id_of(af, process)
        run = await af.start_run(tool="sleeps-then-answers", input={}, queue=queue)
        await wait_until_pulled(js, queue)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

        final = await af.wait_run(run["id"], timeout=WAIT_SECONDS)
        assert final["state"] == "succeeded", final
        assert final["output"] == {"slept": True}
        assert [(t["attempt"], t["worker_id"]) for t in final["tasks"]] == [(1, worker_id)]
        log = worker_log(stack, worker_id)
        assert "draining 1 task(s) in flight" in log, log
        assert f"worker {worker_id} stopped after 1 task(s)" in log, log
        assert worker_id not in [w["id"] for w in await af.list_workers()]
    finally:
        stop_worker(process)


async def test_a_busy_worker_hands_back_a_task_that_outlasts_the_drain_deadline(
    stack: Stack, js: JetStreamContext, af: AsyncClient
) -> None:
    # Every slot busy (concurrency 1) and a drain deadline far shorter than the task: SIGTERM must hand the
    # task back after the deadline rather than wait for the tool to finish.
    queue = "drain-deadline"
    await af.register_tool(sleeper("sleeps-past-the-drain", 3))
    process = stack.start_worker(queue=queue, concurrency=1, AF_DRAIN_SECONDS="0.5")
    run = await af.start_run(tool="sleeps-past-the-drain", input={}, queue=queue)
    try:
        worker_id = await worker_id_of(af, process)
        await wait_until_pulled(js, queue)

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0

        log = worker_log(stack, worker_id)
        assert "handing back 1 task(s) that did not finish in time" in log, log
        assert f"worker {worker_id} stopped after 0 task(s)" in log, log

        async def handed_back() -> bool:  # the control plane applies the worker's hand-back after it exits
            return [t["state"] for t in (await af.get_run(run["id"]))["tasks"]] == ["queued"]

        await eventually("the task handed back to be queued again", handed_back)
    finally:
        stop_worker(process)
        with contextlib.suppress(Conflict):  # finished, if the worker kept it
            await af.cancel_run(run["id"])


async def test_a_task_published_while_no_worker_runs_is_delivered_once_one_starts(
    stack: Stack, js: JetStreamContext, af: AsyncClient
) -> None:
    queue = "late"
    run = await af.start_run(tool="noop", input={"late": True}, queue=queue)
    subject = subjects.tasks(TENANT, queue)

    async def stored() -> bool:
        info = await js.stream_info(subjects.TASKS_STREAM, subjects_filter=subject)
        return bool((info.state.subjects or {}).get(subject))

    await eventually(f"the task to be stored on {subject}", stored)
    assert [t["state"] for t in (await af.get_run(run["id"]))["tasks"]] == ["queued"]

    process = stack.start_worker(queue=queue, concurrency=1)
    try:
        final = await af.wait_run(run["id"], timeout=WAIT_SECONDS)
        assert final["state"] == "succeeded", final
        assert final["output"] == {"late": True}
        assert final["tasks"][0]["attempt"] == 1
        assert alive(process.pid)
    finally:
        stop_worker(process)
