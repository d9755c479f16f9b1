"""AgentFlow on a 3-node NATS cluster on loopback: its streams and buckets at three replicas, runs that
succeed on it, and a run that still finishes after one node is killed with SIGKILL."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from agentflow import AsyncClient

from bus import connect, subjects
from tests.conftest import Stack, clustered_stack, eventually
from tests.test_backpressure import sleeper

WAIT_SECONDS = 90.0
REPLICATED = (
    subjects.TASKS_STREAM,
    subjects.RESULTS_STREAM,
    subjects.LOGS_STREAM,
    subjects.CHANNELS_STREAM,
    f"KV_{subjects.WORKERS_BUCKET}",
    f"KV_{subjects.MODELS_BUCKET}",
)


@pytest.fixture(scope="module")
def cluster(tmp_root: Path) -> Iterator[Stack]:
    with clustered_stack(tmp_root, 3) as running:
        running.start_worker(AF_SANDBOX="process")
        yield running


async def replicas(stack: Stack) -> dict[str, tuple[int, int]]:
    """Each stream's configured replicas, and how many servers hold a current copy (its leader included)."""
    bus = await connect(stack.nats_url, "test-cluster")
    try:
        found = {}
        for name in REPLICATED:
            info = await bus.jetstream.stream_info(name)
            assert info.cluster is not None
            current = [peer for peer in info.cluster.replicas or [] if peer.current]
            found[name] = (info.config.num_replicas, int(info.cluster.leader is not None) + len(current))
        return found
    finally:
        await bus.close()


async def settled(stack: Stack) -> None:
    """Wait until every stream has a leader and two current replicas again: a node started again catches up
    first, and losing another before it has would be losing two of three."""

    async def all_current() -> bool:
        try:
            return await replicas(stack) == {name: (3, 3) for name in REPLICATED}
        except Exception:  # a stream without a leader for the moment answers no info
            return False

    await eventually("every stream on three current nodes", all_current)


async def run_sleeper(af: AsyncClient, seconds: float) -> str:
    await af.register_tool(sleeper(seconds))
    answer = await af.start_run(tool=f"sleeps-{int(seconds * 1000)}ms", input={}, queue="default")
    return str(answer["id"])


async def test_a_run_succeeds_on_the_cluster_with_every_stream_and_bucket_at_three_replicas(cluster: Stack) -> None:
    await settled(cluster)
    assert await replicas(cluster) == {name: (3, 3) for name in REPLICATED}
    async with AsyncClient(api_url=cluster.api_url, token=cluster.token) as af:
        run_id = await run_sleeper(af, 0.1)
        run = await af.wait_run(run_id, timeout=WAIT_SECONDS)
    assert run["state"] == "succeeded"


@pytest.mark.parametrize("node", [0, 1, 2])
async def test_a_run_finishes_when_a_nats_node_is_killed_while_it_runs(cluster: Stack, node: int) -> None:
    """Each node in turn, so that one of the kills takes the worker's own server (and the consumer leader it
    pulled from) and one the control plane's; the node is started again and catches up before the next."""
    await settled(cluster)
    async with AsyncClient(api_url=cluster.api_url, token=cluster.token) as af:
        run_id = await run_sleeper(af, 1.0)
        cluster.kill_nats_node(node)
        try:
            run = await af.wait_run(run_id, timeout=WAIT_SECONDS)
            after = await af.wait_run(await run_sleeper(af, 0.1), timeout=WAIT_SECONDS)
        finally:
            cluster.restart_nats_node(node)
    assert (run["state"], after["state"]) == ("succeeded", "succeeded")
