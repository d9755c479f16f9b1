"""Several control planes on one PostgreSQL and one NATS: they share the runs, one leads the duties that must
run once and another takes them over when it dies, and in-flight limits hold across them."""

import asyncio
import time
from collections import Counter
from typing import Any

import httpx
from agentflow import AsyncClient, Client

from control_plane.engine.dispatch import LIMITS_RELOAD_SECONDS
from control_plane.engine.leadership import LEASE_CHECK_SECONDS
from tests.conftest import Stack, eventually
from tests.test_backpressure import most_at_once, sleeper, workers

FAN_OUT = {
    "name": "two-cps",
    "version": "1.0.0",
    "kind": "dag",
    "steps": [
        {"name": "a", "tool": "noop"},
        {"name": "b", "tool": "noop", "needs": ["a"]},
        {"name": "c", "tool": "noop", "needs": ["a"]},
        {"name": "d", "tool": "noop", "needs": ["b", "c"]},
    ],
}
NAP = {
    "name": "nap-across-cps",
    "version": "1.0.0",
    "kind": "fsm",
    "initial": "nap",
    "states": {"nap": {"sleep_seconds": 2, "transitions": [{"to": "done"}]}, "done": {"final": True}},
}


def leads(url: str) -> bool:
    """Whether the control plane at ``url`` says, in its metrics, that it leads the singleton duties."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return "agentflow_control_plane_leader 1.0" in text


def test_runs_submitted_through_two_control_planes_all_finish_and_apply_each_result_once(stack: Stack) -> None:
    with stack.extra_control_plane() as other:
        clients = [Client(api_url=url, token=stack.token) for url in (stack.api_url, other)]
        clients[0].apply_workflow(FAN_OUT)
        # Each run's results go to whichever control plane pulls them, so both apply results of runs the
        # other planned (and may have cached).
        run_ids = [clients[i % 2].start_run(workflow="two-cps", input={"n": i})["id"] for i in range(60)]
        finals = [clients[(i + 1) % 2].wait_run(run_id, timeout=60) for i, run_id in enumerate(run_ids)]
        applied = Counter(
            e["data"]["task_id"]
            for run_id in run_ids
            for e in clients[0].events(run_id)
            if e["type"] == "task.succeeded"
        )
    assert {final["state"] for final in finals} == {"succeeded"}
    assert all(len(final["tasks"]) == 4 for final in finals)
    assert set(applied.values()) == {1} and len(applied) == 4 * len(run_ids)


def test_one_control_plane_leads_and_another_takes_over_within_seconds_when_it_is_killed(own_stack: Stack) -> None:
    with own_stack.another_control_plane() as other:
        assert leads(own_stack.api_url) and not leads(other.url)
        with Client(api_url=other.url, token=own_stack.token) as af:
            af.apply_workflow(NAP)
            run_ids = [af.start_run(workflow="nap-across-cps", input={})["id"] for _ in range(3)]
            own_stack.kill_control_plane()  # the leader, while the runs' timers are due in 2 s
            killed = time.monotonic()
            while not leads(other.url):
                assert time.monotonic() - killed < 10, "no control plane took the lead within 10 s"
                time.sleep(0.1)
            took_over = time.monotonic() - killed
            finals = [af.wait_run(run_id, timeout=30) for run_id in run_ids]
    assert {final["state"] for final in finals} == {"succeeded"}
    print(f"\nthe lead was taken over {took_over:.2f} s after the leader was killed")


async def test_a_queue_limit_holds_while_two_control_planes_admit_at_once(stack: Stack) -> None:
    queue = "cps-limit"
    with stack.extra_control_plane() as other:
        async with (
            AsyncClient(api_url=stack.api_url, token=stack.token) as first,
            AsyncClient(api_url=other, token=stack.token) as second,
        ):
            await first.register_tool(sleeper(0.2))
            await first.configure_queue(queue, max_in_flight=3)  # set through one, held by both at once
            await asyncio.sleep(LIMITS_RELOAD_SECONDS + 0.5)  # how soon the other applies it
            with workers(stack, queue):
                # A run through each first: both know the queue, with nothing in flight, before they admit.
                for af in (first, second):
                    (warm,) = await af.start_runs([{"tool": "sleeps-200ms", "input": {}, "queue": queue}])
                    await af.wait_run(warm["id"], timeout=60)
                batches = await asyncio.gather(
                    *(
                        af.start_runs([{"tool": "sleeps-200ms", "input": {}, "queue": queue} for _ in range(3)])
                        for _ in range(4)
                        for af in (first, second)
                    )
                )
                run_ids = [answer["id"] for batch in batches for answer in batch]
                held = await eventually("both control planes to see the held tasks", lambda: _held(second, queue))
                runs = [await first.wait_run(run_id, timeout=60) for run_id in run_ids]
            tasks: list[dict[str, Any]] = [(await second.get_run(run_id))["tasks"][0] for run_id in run_ids]
    assert held > 0
    assert {run["state"] for run in runs} == {"succeeded"}
    assert most_at_once(tasks) == 3


async def _held(af: AsyncClient, queue: str) -> int:
    answer = await af.list_queues()
    return sum(q["held"] for q in answer["items"] if q["queue"] == queue)


def _admitted(url: str, key: str, requests: int) -> int:
    """How many of ``requests`` sent at once to the control plane at ``url`` it answers without a 429."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        return sum(client.get("/v1/tools").status_code != 429 for _ in range(requests))


def test_control_planes_share_a_tenants_request_rate(stack: Stack) -> None:
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=30) as admin:
        answer = admin.post("/v1/tenants", json={"name": "cps-rate", "requests_per_second": 6})
        assert answer.status_code == 201, answer.text
        key = answer.json()["admin_key"]["key"]
    time.sleep(LEASE_CHECK_SECONDS * 2)  # the control planes of earlier tests are no longer counted
    alone = _admitted(stack.api_url, key, 12)
    with stack.extra_control_plane() as other:
        time.sleep(LEASE_CHECK_SECONDS * 2 + 1)  # both have counted two live control planes, and buckets refilled
        shares = [_admitted(stack.api_url, key, 12), _admitted(other, key, 12)]
    # Alone, a second's worth (6) and what refills meanwhile; each of two, half of that.
    assert alone >= 6
    assert all(share <= 4 for share in shares), shares
