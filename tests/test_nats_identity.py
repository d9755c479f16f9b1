"""NATS service identity: each process connects as its own user, and the server itself keeps one tenant's
workers away from another tenant's tasks, results and heartbeats.

The refusals are the real nats-server's: it answers a forbidden subscription or publish with a permissions
violation, which nats-py hands to the connection's error callback (a forbidden request gets no reply).
Most tests use a nats-server of their own with tenants ``alpha`` and ``beta``, started as the stack starts
it; the last ones run real workers.
"""

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import pytest
from agentflow import Client
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from bus import Bus, Fleet, subjects
from bus.connection import inbox_prefix
from bus.consume import bind
from bus.messages import Result, Task, decode, encode
from bus.streams import ensure_streams, ensure_task_consumer
from control_plane.stack import launcher as embedded_stack
from control_plane.stack import nats_identity
from control_plane.stack.nats import NatsServer
from control_plane.stack.processes import spawn, stop
from tests.conftest import ROOT, Stack, eventually, heartbeat_of, nats_identities, noop_task, start_nats

REFUSED_WAIT_SECONDS = 1.0


@dataclass
class Server:
    root: Path
    process: NatsServer
    identities: nats_identity.Identities


@pytest.fixture(scope="module")
def server(tmp_root: Path) -> Iterator[Server]:
    """A nats-server whose workers of ``alpha`` and ``beta`` may each pull their tenant's ``default`` queue."""
    root = tmp_root / "identity"
    identities = nats_identities(root)
    for tenant in ("alpha", "beta"):
        identities.grant(tenant, "default")
    process = start_nats(root)
    try:
        yield Server(root, process, identities)
    finally:
        stop(process.process.pid)


@dataclass
class Connection:
    """A client connected as one user, with every error the server sent it."""

    nc: NATS
    errors: list[Exception] = field(default_factory=list)

    @property
    def bus(self) -> Bus:
        return Bus(self.nc, timeout=REFUSED_WAIT_SECONDS)

    @property
    def js(self) -> JetStreamContext:
        return self.bus.jetstream

    async def refused(self, what: str) -> None:
        """Wait for the server's permissions violation for ``what`` (e.g. ``publish to "subject"``)."""
        expected = f"permissions violation for {what}".lower()

        async def seen() -> bool:
            return any(expected in str(error).lower() for error in self.errors)

        await eventually(f"the server to refuse {what}", seen)


async def connect_as(server: Server, user: str, password: str | None = None) -> Connection:
    connection = Connection(nc=NATS())

    async def on_error(error: Exception) -> None:
        connection.errors.append(error)

    await connection.nc.connect(
        server.process.url,
        user=user,
        password=server.identities.passwords[user] if password is None else password,
        inbox_prefix=inbox_prefix(user),
        error_cb=on_error,
        allow_reconnect=False,
    )
    return connection


@pytest.fixture
async def control(server: Server) -> AsyncIterator[Connection]:
    """The control plane's identity, having set up the streams and alpha's consumer."""
    connection = await connect_as(server, nats_identity.CONTROL_PLANE)
    await ensure_streams(connection.bus)
    await ensure_task_consumer(connection.bus, "alpha", "default")
    yield connection
    await connection.nc.close()


@pytest.fixture
async def beta(server: Server, control: Connection) -> AsyncIterator[Connection]:
    connection = await connect_as(server, nats_identity.worker_user("beta"))
    yield connection
    await connection.nc.close()


def task_of(tenant: str) -> Task:
    return noop_task(tenant, b'{"secret": "of the tenant"}')


async def publish_task(control: Connection, task: Task, queue: str = "default") -> None:
    await control.js.publish(subjects.tasks(task.tenant, queue), encode(task), headers={"Nats-Msg-Id": task.task_id})


def test_the_generated_configuration_is_private_and_names_each_tenants_consumers(tmp_path: Path) -> None:
    identities = nats_identity.Identities.create(tmp_path / "nats")
    identities.grant("beta", "gpu")

    for name in (nats_identity.IDENTITIES_FILE, nats_identity.CONFIG_FILE):
        assert (tmp_path / "nats" / name).stat().st_mode & 0o777 == 0o600
    users = {u["user"]: u for u in json.loads(identities.config.read_text())["authorization"]["users"]}
    assert sorted(users) == ["admin", "control-plane", "worker-beta", "worker-default"]
    assert "permissions" not in users["admin"]
    beta = users["worker-beta"]["permissions"]
    assert "$JS.API.CONSUMER.MSG.NEXT.AF_TASKS.tasks_beta_gpu" in beta["publish"]["allow"]
    assert not [s for s in beta["publish"]["allow"] + beta["subscribe"]["allow"] if "default" in s]
    assert len({u["password"] for u in users.values()}) == 4


# --- refusals ---------------------------------------------------------------------------------------


async def test_a_worker_of_beta_is_refused_a_subscription_to_alphas_tasks(
    control: Connection, beta: Connection
) -> None:
    sub = await beta.nc.subscribe("af.alpha.tasks.>")

    await beta.refused('subscription to "af.alpha.tasks.>"')
    await control.nc.publish("af.alpha.tasks.default", b"not for beta")
    with pytest.raises(nats.errors.TimeoutError):
        await sub.next_msg(timeout=REFUSED_WAIT_SECONDS)


async def test_a_worker_of_beta_is_refused_a_pull_from_alphas_consumer(control: Connection, beta: Connection) -> None:
    await publish_task(control, task_of("alpha"))
    alphas = subjects.task_consumer("alpha", "default")

    sub = await beta.js.pull_subscribe_bind(durable=alphas, stream=subjects.TASKS_STREAM)
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=REFUSED_WAIT_SECONDS)

    await beta.refused(f'publish to "$JS.API.CONSUMER.MSG.NEXT.{subjects.TASKS_STREAM}.{alphas}"')
    info = await control.js.consumer_info(subjects.TASKS_STREAM, alphas)
    assert info.num_pending >= 1
    assert info.num_ack_pending == 0, "a task of alpha was delivered to beta"


async def test_a_worker_of_beta_is_refused_publishing_alphas_results(control: Connection, beta: Connection) -> None:
    subject = subjects.results("alpha", str(uuid.uuid4()))

    with pytest.raises(nats.errors.TimeoutError):
        await beta.js.publish(subject, b'{"forged": true}', headers={"Nats-Msg-Id": "forged"})

    await beta.refused(f'publish to "{subject}"')
    with pytest.raises(NotFoundError):
        await control.js.get_last_msg(subjects.RESULTS_STREAM, subject)


async def test_a_worker_of_beta_streams_its_own_tools_stderr_and_is_refused_alphas(
    control: Connection, beta: Connection
) -> None:
    own, alphas = subjects.tool_logs("beta", str(uuid.uuid4())), subjects.tool_logs("alpha", str(uuid.uuid4()))

    await beta.bus.client.publish(own, b"beta's tool's stderr")
    await beta.bus.client.publish(alphas, b"forged")
    await beta.bus.client.flush()

    await beta.refused(f'publish to "{alphas}"')
    stored = await control.js.get_last_msg(subjects.LOGS_STREAM, own)
    assert stored.data == b"beta's tool's stderr"
    with pytest.raises(NotFoundError):
        await control.js.get_last_msg(subjects.LOGS_STREAM, alphas)


async def test_a_worker_of_beta_cannot_touch_alphas_heartbeats(control: Connection, beta: Connection) -> None:
    key = subjects.worker_key("alpha", "alpha-worker")
    await (await Fleet.open(control.bus)).put(heartbeat_of("alpha", "alpha-worker"))
    fleet = await Fleet.open(beta.bus)

    with pytest.raises(nats.errors.TimeoutError):
        await fleet.leave("alpha", "alpha-worker")

    await beta.refused(f'publish to "$KV.{subjects.WORKERS_BUCKET}.{key}"')
    assert "alpha-worker" in [b.worker_id for b in await (await Fleet.open(control.bus)).members()]


async def test_a_worker_of_beta_cannot_create_its_consumer_over_alphas_tasks(beta: Connection) -> None:
    """Its consumer's name is beta's, but the filter in the request body is alpha's subject."""
    consumer = subjects.task_consumer("beta", "default")
    body = {
        "stream_name": subjects.TASKS_STREAM,
        "config": {"name": consumer, "durable_name": consumer, "filter_subject": subjects.tasks("alpha", "default")},
    }
    create = f"$JS.API.CONSUMER.CREATE.{subjects.TASKS_STREAM}.{consumer}.{subjects.tasks('beta', 'default')}"

    reply = json.loads((await beta.nc.request(create, json.dumps(body).encode(), timeout=5)).data)

    assert reply["error"]["err_code"] == 10131, reply  # did not match the filtered subject of the request


async def test_a_connection_with_a_wrong_password_or_none_is_refused(server: Server) -> None:
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await connect_as(server, nats_identity.worker_user("beta"), password="not-the-password")
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(server.process.url, allow_reconnect=False)


def test_a_worker_with_a_wrong_password_stops_at_start_with_one_line(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    env |= {"AF_NATS_URL": server.process.url, "AF_SANDBOX": "process", "AF_TENANT": "beta"}
    env |= {"AF_NATS_USER": nats_identity.worker_user("beta"), "AF_NATS_PASSWORD": "not-the-password"}

    worker = subprocess.run(
        [sys.executable, "-m", "worker", "start"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert worker.returncode == 2
    assert worker.stderr.splitlines()[-1] == (
        f"af worker: NATS at {server.process.url} refused user 'worker-beta' (AF_NATS_USER, AF_NATS_PASSWORD)"
    )


# --- what a worker of beta may do -------------------------------------------------------------------


async def test_a_worker_of_beta_pulls_its_own_tasks_and_publishes_their_results(
    control: Connection, beta: Connection
) -> None:
    task = task_of("beta")
    await publish_task(control, task)

    durable = await ensure_task_consumer(beta.bus, "beta", "default")
    messages = await (await bind(beta.bus, subjects.TASKS_STREAM, durable)).pull(1, 5.0)
    assert [decode(m.data, Task).task_id for m in messages] == [task.task_id]
    subject = subjects.results("beta", task.run_id)
    await beta.js.publish(subject, b'{"ok": true}', headers={"Nats-Msg-Id": f"{task.task_id}:1:result"})
    await messages[0].ack()
    await (await Fleet.open(beta.bus)).put(heartbeat_of("beta", "beta-worker"))
    await beta.nc.flush()

    assert beta.errors == []
    assert (await control.js.get_last_msg(subjects.RESULTS_STREAM, subject)).data == b'{"ok": true}'


async def test_a_task_consumer_of_the_old_naming_gives_way_and_its_tasks_reach_the_new_one(control: Connection) -> None:
    legacy = "tasks-beta-legacy"  # tasks-<tenant>-<queue>: "tasks-a-b-c" was both a/b-c and a-b/c
    await control.js.add_consumer(
        subjects.TASKS_STREAM,
        ConsumerConfig(
            durable_name=legacy, filter_subject=subjects.tasks("beta", "legacy"), ack_policy=AckPolicy.EXPLICIT
        ),
    )
    task = task_of("beta")
    await publish_task(control, task, queue="legacy")

    await ensure_streams(control.bus)
    durable = await ensure_task_consumer(control.bus, "beta", "legacy")

    with pytest.raises(NotFoundError):
        await control.js.consumer_info(subjects.TASKS_STREAM, legacy)
    messages = await (await bind(control.bus, subjects.TASKS_STREAM, durable)).pull(1, 5.0)
    assert [decode(m.data, Task).task_id for m in messages] == [task.task_id]


# --- real workers -----------------------------------------------------------------------------------


async def test_af_worker_start_joins_the_running_stack_as_its_tenants_worker(
    server: Server, control: Connection, tmp_path: Path
) -> None:
    """`af worker start --tenant beta --queue jobs` finds the local stack, gets beta's identity and the new
    queue granted (nats-server reloads its configuration), and runs beta's task."""
    embedded_stack.StackState(
        str(server.root),
        "",
        server.process.url,
        "",
        [embedded_stack.Part("nats-server", server.process.process.pid, str(server.process.log))],
    ).save()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    env |= {"AF_HOME": str(server.root), "AF_SANDBOX": "process", "AF_WORKER_ID": "beta-jobs-1"}
    log = tmp_path / "worker.log"
    argv = [sys.executable, "-m", "control_plane.stack", "worker", "--tenant", "beta", "--queue", "jobs"]
    server_log_offset = server.process.log.stat().st_size
    worker = spawn("worker", argv, log, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 20
        while "pulling af.beta.tasks.jobs" not in log.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            await asyncio.sleep(0.05)
        task = task_of("beta")
        await publish_task(control, task, queue="jobs")

        async def result() -> Result | None:
            try:
                msg = await control.js.get_last_msg(subjects.RESULTS_STREAM, subjects.results("beta", task.run_id))
            except NotFoundError:
                return None
            return decode(msg.data, Result)

        stored: Result = await eventually("beta's worker to publish the result", result)
        assert (stored.ok, stored.worker_id) == (True, "beta-jobs-1")
        assert "jobs" in nats_identities(server.root).queues["beta"]
    finally:
        stop(worker.pid, timeout=15)
        worker.wait()
        (server.root / embedded_stack.STATE_FILE).unlink()
    assert "Violation" not in server.process.log.read_text()[server_log_offset:]


def test_a_run_completes_on_workers_that_connect_with_their_own_identity(stack: Stack, client: Client) -> None:
    queue = "own-identity"
    worker = stack.start_worker(queue=queue, concurrency=2)
    try:
        run = client.start_run(tool="noop", input={"who": "worker-default"}, queue=queue)
        final = client.wait_run(run["id"], timeout=30)
    finally:
        stop(worker.pid, timeout=15)
        worker.wait()

    assert final["state"] == "succeeded", final
    assert final["output"] == {"who": "worker-default"}
    assert final["tasks"][0]["worker_id"].startswith(f"test-{queue}-")
