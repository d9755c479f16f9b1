"""Several control planes against one PostgreSQL and one NATS: they share the work and apply every result
once, the leader's duties (due timers, the outbox relay) move to another when the leader is killed, and a
tenant's in-flight limit holds over all of them at once.
"""

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from agentflow import AsyncClient, Client

from tests.conftest import Stack, eventually
from tests.test_backpressure import finished_tasks, most_at_once, sample, sleeper, start_runs, workers
from tests.test_observability import scrape, total
from tests.test_soak import EFFECT, WORKFLOW
from tests.test_workflows_e2e import _wait_for_state

RUNS = 40
NAP = {
    "name": "nap-on-the-leader",
    "version": "1.0.0",
    "kind": "fsm",
    "initial": "nap",
    "states": {
        "nap": {"sleep_seconds": 3, "transitions": [{"to": "done"}]},
        "done": {"final": True, "output": {"woke": True}},
    },
}


def leads(url: str) -> bool:
    return total(scrape(f"{url}/metrics"), "agentflow_control_plane_leader") == 1


def test_runs_submitted_to_two_control_planes_alternately_finish_with_each_result_applied_once(
    own_stack: Stack, tmp_path: Path
) -> None:
    other_url, _ = own_stack.start_extra_control_plane()
    effect_log = tmp_path / "effects.log"
    with own_stack.client() as first, Client(api_url=other_url, token=own_stack.token) as second:
        first.register_tool(
            {
                "name": "effect",
                "version": "1.0.0",
                "runtime": {"command": ["python3", "main.py"], "files": {"main.py": EFFECT}},
            }
        )
        first.apply_workflow(WORKFLOW)
        planes = (first, second)
        run_ids = [
            planes[n % 2].start_run(workflow="soak", input={"log": str(effect_log), "n": n})["id"] for n in range(RUNS)
        ]
        finals = [planes[n % 2].wait_run(run_id, timeout=120) for n, run_id in enumerate(run_ids)]
        applied = Counter(
            e["data"]["task_id"] for run_id in run_ids for e in first.events(run_id) if e["type"] == "task.succeeded"
        )
    executed = Counter(line.split(":")[0] for line in effect_log.read_text().splitlines())
    tasks = [task for final in finals for task in final["tasks"]]

    assert {final["state"] for final in finals} == {"succeeded"}
    assert len(tasks) == 3 * RUNS
    assert all(applied[task["id"]] == 1 for task in tasks), "a result was applied twice"
    assert all(executed[task["id"]] >= 1 for task in tasks), "a task never ran"
    shares = [
        total(scrape(f"{url}/metrics"), "agentflow_results_applied_total") for url in (own_stack.api_url, other_url)
    ]
    print(f"\nresults applied by each control plane: {shares}")
    assert all(share > 0 for share in shares), "one control plane applied every result"


async def test_a_killed_leaders_due_timers_are_fired_by_the_control_plane_that_takes_over(own_stack: Stack) -> None:
    other_url, _ = own_stack.start_extra_control_plane()
    # The first control plane took the lease at its start; the other one waits for it.
    await eventually("the first control plane to lead", lambda: asyncio.to_thread(leads, own_stack.api_url))
    assert not await asyncio.to_thread(leads, other_url)
    with Client(api_url=other_url, token=own_stack.token) as af:
        af.apply_workflow(NAP)
        run_id = af.start_run(workflow=NAP["name"], input={})["id"]
        _wait_for_state(af, run_id, "nap", "queued")
        killed = time.monotonic()
        own_stack.kill_control_plane()
        await eventually("the other control plane to take the lease", lambda: asyncio.to_thread(leads, other_url))
        print(f"\nlease taken over {time.monotonic() - killed:.2f} s after the leader was killed")
        final = af.wait_run(run_id, timeout=60)
    assert final["state"] == "succeeded", final
    assert final["output"] == {"woke": True}
    assert [task["step"] for task in final["tasks"]] == ["nap"]


async def test_two_control_planes_admitting_at_once_never_put_more_in_flight_than_the_tenants_limit(
    stack: Stack,
) -> None:
    tenant, queue = "two-planes", "two-planes"
    key = await stack.tenant_key(tenant)
    with stack.extra_control_plane() as other_url:
        async with (
            AsyncClient(api_url=stack.api_url, token=key) as first,
            AsyncClient(api_url=other_url, token=key) as second,
        ):
            await first.register_tool(sleeper(0.2))
            await first.configure_limits(max_in_flight=3)
            with workers(stack, queue, tenant=tenant, concurrency=8):
                loads: list[dict[str, Any]] = []
                samplers = [asyncio.create_task(sample(af, queue, loads)) for af in (first, second)]
                run_ids: list[str] = []
                for _ in range(3):
                    batches = await asyncio.gather(
                        start_runs(first, "sleeps-200ms", queue, 6), start_runs(second, "sleeps-200ms", queue, 6)
                    )
                    run_ids += [run_id for batch in batches for run_id in batch]
                tasks = await finished_tasks(first, run_ids)
                for sampler in samplers:
                    sampler.cancel()
    most = max(load["in_flight"] for load in loads)
    print(f"\nmost in flight as sampled: {most}, running at once: {most_at_once(tasks)}")
    assert most <= 3
    assert max(load["held"] for load in loads) >= 1, "the tasks over the limit were held"
    assert most_at_once(tasks) == 3
