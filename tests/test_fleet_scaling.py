"""The worker fleet's scaling signal on the real stack: tasks no worker has taken, per tenant and queue, with
the age of the oldest, in ``GET /v1/queues`` and as Prometheus gauges."""

from typing import Any

from agentflow import AsyncClient

from tests.conftest import Stack, eventually
from tests.test_backpressure import sleeper, start_runs
from tests.test_observability import scrape

QUEUE = "scale-unserved"


async def test_tasks_waiting_with_no_worker_show_as_depth_and_oldest_age_in_the_route_and_the_metrics(
    stack: Stack,
) -> None:
    async with AsyncClient(api_url=stack.api_url, token=stack.token) as af:
        await af.register_tool(sleeper(0.1))
        run_ids = await start_runs(af, "sleeps-100ms", QUEUE, 3)
        try:

            async def backlog() -> dict[str, Any] | None:
                items = (await af.list_queues())["items"]
                item = next((q for q in items if q["queue"] == QUEUE), None)
                return item if item and item["depth"] == 3 and item["oldest_age_seconds"] > 0 else None

            listed = await eventually("three tasks waiting on the unserved queue", backlog)

            async def gauges() -> tuple[float, float] | None:
                samples = scrape(f"{stack.api_url}/metrics")
                labels = {"tenant": "default", "queue": QUEUE}
                depth = [v for found, v in samples.get("agentflow_queue_depth_tasks", []) if found == labels]
                age = [v for found, v in samples.get("agentflow_queue_oldest_task_age_seconds", []) if found == labels]
                return (depth[0], age[0]) if depth == [3.0] and age and age[0] > 0 else None

            depth, age = await eventually("the sampler to export the queue's depth and oldest age", gauges)
        finally:
            for run_id in run_ids:
                await af.cancel_run(run_id)
    assert listed["in_flight"] == 3, "admitted and published, not held"
    assert (depth, age > 0) == (3.0, True)
