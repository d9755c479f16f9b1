"""Back-pressure and fairness on the real stack: in-flight limits per queue and per tenant, held tasks
released by queue priority, a flooding tenant beside a calm one, held tasks surviving a control-plane kill.

Every run here uses the process sandbox on its own queues: these tests are about scheduling.
"""

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from agentflow import AsyncClient, Forbidden

from control_plane.stack.processes import stop
from tests.conftest import Stack, eventually

WAIT_SECONDS = 60.0


def sleeper(seconds: float) -> dict[str, Any]:
    code = f"import json, time; time.sleep({seconds}); print(json.dumps({{'slept': {seconds}}}))"
    return {
        "name": f"sleeps-{int(seconds * 1000)}ms",
        "version": "1.0.0",
        "runtime": {"command": ["python3", "-c", code]},
        "limits": {"wall_seconds": 60},
    }


@contextlib.contextmanager
def workers(
    stack: Stack, queue: str, tenant: str = "default", concurrency: int = 8
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [stack.start_worker(queue=queue, concurrency=concurrency, tenant=tenant, AF_SANDBOX="process")]
    try:
        yield started
    finally:
        for process in started:
            stop(process.pid, timeout=15)


def most_at_once(tasks: list[dict[str, Any]]) -> int:
    """The most tasks that were running at the same moment, from their start and finish times."""
    edges = []
    for task in tasks:
        edges.append((datetime.fromisoformat(task["started_at"]), 1))
        edges.append((datetime.fromisoformat(task["finished_at"]), -1))
    running = peak = 0
    for _, step in sorted(edges):  # at equal times a finish (-1) sorts before a start
        running += step
        peak = max(peak, running)
    return peak


async def finished_tasks(af: AsyncClient, run_ids: list[str]) -> list[dict[str, Any]]:
    runs = [await af.wait_run(run_id, timeout=WAIT_SECONDS) for run_id in run_ids]
    assert {run["state"] for run in runs} == {"succeeded"}
    return [(await af.get_run(run_id))["tasks"][0] for run_id in run_ids]


async def start_runs(af: AsyncClient, tool: str, queue: str, count: int) -> list[str]:
    answers = await af.start_runs([{"tool": tool, "input": {}, "queue": queue} for _ in range(count)])
    return [answer["id"] for answer in answers]


async def queue_load(af: AsyncClient, queue: str) -> dict[str, Any]:
    answer = await af.list_queues()
    return next((q for q in answer["items"] if q["queue"] == queue), {"in_flight": 0, "held": 0})


async def sample(af: AsyncClient, queue: str, loads: list[dict[str, Any]]) -> None:
    """Record the queue's load every 50 ms until cancelled."""
    while True:
        loads.append(await queue_load(af, queue))
        await asyncio.sleep(0.05)


async def test_a_queue_never_has_more_tasks_in_flight_than_its_limit(stack: Stack) -> None:
    queue = "bp-limit"
    async with AsyncClient(api_url=stack.api_url, token=stack.token) as af:
        await af.register_tool(sleeper(0.3))
        configured = await af.configure_queue(queue, max_in_flight=2)
        assert {
            "queue": queue,
            "max_in_flight": 2,
            "priority": 0,
            "in_flight": 0,
            "held": 0,
            "depth": 0,
            "oldest_age_seconds": 0.0,
        } in configured["items"]
        with workers(stack, queue):
            loads: list[dict[str, Any]] = []
            sampling = asyncio.create_task(sample(af, queue, loads))
            run_ids = await start_runs(af, "sleeps-300ms", queue, 10)
            tasks = await finished_tasks(af, run_ids)
            sampling.cancel()
    assert max(load["in_flight"] for load in loads) <= 2
    assert max(load["held"] for load in loads) >= 1, "the tasks over the limit were held"
    assert most_at_once(tasks) == 2


async def test_a_worker_never_runs_more_tasks_at_once_than_its_concurrency(stack: Stack) -> None:
    queue = "bp-worker"
    async with AsyncClient(api_url=stack.api_url, token=stack.token) as af:
        await af.register_tool(sleeper(0.3))
        with workers(stack, queue, concurrency=2):
            tasks = await finished_tasks(af, await start_runs(af, "sleeps-300ms", queue, 8))
    assert most_at_once(tasks) == 2


async def test_held_tasks_of_a_higher_priority_queue_are_released_first(stack: Stack) -> None:
    async with AsyncClient(api_url=stack.api_url, token=await stack.tenant_key("prio")) as af:
        await af.register_tool(sleeper(0.5))
        await af.configure_limits(max_in_flight=1)
        await af.configure_queue("batch", priority=0)
        await af.configure_queue("urgent", priority=5)
        with workers(stack, "batch", tenant="prio"), workers(stack, "urgent", tenant="prio"):
            (first,) = await start_runs(af, "sleeps-500ms", "batch", 1)
            await eventually("the first task to take the tenant's one slot", lambda: in_flight(af, "batch"))
            batch = await start_runs(af, "sleeps-500ms", "batch", 3)
            (urgent,) = await start_runs(af, "sleeps-500ms", "urgent", 1)
            tasks = await finished_tasks(af, [first, *batch, urgent])
    started = {task["queue"] + str(i): datetime.fromisoformat(task["started_at"]) for i, task in enumerate(tasks)}
    assert started["urgent4"] < min(started[f"batch{i}"] for i in (1, 2, 3))
    assert most_at_once(tasks) == 1


async def test_a_flood_from_one_tenant_does_not_starve_another(stack: Stack) -> None:
    queue = "fair"
    flood_key, calm_key = await stack.tenant_key("flood"), await stack.tenant_key("calm")
    async with (
        AsyncClient(api_url=stack.api_url, token=flood_key) as flood,
        AsyncClient(api_url=stack.api_url, token=calm_key) as calm,
    ):
        for af in (flood, calm):
            await af.register_tool(sleeper(0.05))
        await flood.configure_limits(max_in_flight=4)
        with workers(stack, queue, tenant="flood"), workers(stack, queue, tenant="calm"):
            # The calm tenant's worker is up first: a flood finished while it started would prove nothing.
            await finished_tasks(calm, await start_runs(calm, "sleeps-50ms", queue, 1))
            flooded = await start_runs(flood, "sleeps-50ms", queue, 300)
            await eventually("the flood to be held back", lambda: held_in(flood, queue))
            calm_runs = await start_runs(calm, "sleeps-50ms", queue, 5)
            await finished_tasks(calm, calm_runs)
            still_held = (await queue_load(flood, queue))["held"]
            flood_tasks = await finished_tasks(flood, flooded)
    assert still_held > 0, "the calm tenant's runs finished while the flood was still waiting"
    assert most_at_once(flood_tasks) <= 4


async def held_in(af: AsyncClient, queue: str) -> bool:
    return bool((await queue_load(af, queue))["held"])


async def in_flight(af: AsyncClient, queue: str) -> bool:
    return bool((await queue_load(af, queue))["in_flight"])


async def test_held_tasks_are_released_after_the_control_plane_is_killed(own_stack: Stack) -> None:
    async with AsyncClient(api_url=own_stack.api_url, token=own_stack.token) as af:
        await af.register_tool(sleeper(0.4))
        await af.configure_queue("default", max_in_flight=1)
        run_ids = await start_runs(af, "sleeps-400ms", "default", 6)
        await eventually("tasks to be held", lambda: held_in(af, "default"))
        own_stack.kill_control_plane()
        own_stack.start_control_plane()
    async with AsyncClient(api_url=own_stack.api_url, token=own_stack.token) as af:
        tasks = await finished_tasks(af, run_ids)
    assert most_at_once(tasks) == 1
    assert [task["attempt"] for task in tasks] == [1] * 6


async def test_a_viewer_reads_queue_limits_but_may_not_change_them(stack: Stack) -> None:
    async with AsyncClient(api_url=stack.api_url, token=await stack.tenant_key("bp-roles")) as admin:
        viewer_key = (await admin.create_key("bp-roles", "viewer"))["key"]
    async with AsyncClient(api_url=stack.api_url, token=viewer_key) as viewer:
        assert (await viewer.list_queues())["items"] == []
        with pytest.raises(Forbidden, match="queues:write"):
            await viewer.configure_queue("batch", max_in_flight=1)
