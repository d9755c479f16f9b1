"""Benchmark peer: Restate, its server from the npm package ``@restatedev/restate-server``, services in Python.

``python -m bench.restate_peer --port P`` is one worker: the Python SDK's ASGI app served by hypercorn (as the
SDK documents) on 127.0.0.1:P, bound with ``SO_REUSEPORT`` so that a second worker shares the port: Restate
knows one deployment (one URI), registered once when the server starts. The app holds a service whose ``noop``
handler returns its input (``restate``: a durable invocation, journaled by the server) and a workflow whose
``run`` makes three noop ``ctx.run`` steps one after another (``restate-3step``: each step's result journaled).
The client calls the server's HTTP ingress over keep-alive connections of the bench's lean HTTP/1.1 client:
request-response one at a time and for the sustained rate (:data:`CALLERS` at once); a drain sends one-way
invocations (``/send``) and attaches to each.
restate-server runs with its state under the bench home, on free loopback ports, telemetry off, and a retry
policy of at most :data:`RETRY_MAX` between attempts (its default grows to a minute): a drain's invocations
wait for a worker, and the rate measured should be Restate's, not its backoff's.
"""

import argparse
import asyncio
import functools
import itertools
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import restate
from hypercorn.asyncio import serve
from hypercorn.config import Config

from bench.http import LeanHTTP
from bench.peers import READY, RESTATE_SERVER, PeerMissing, logged_since
from control_plane.stack.processes import free_port, spawn, stop, wait_until

SERVICE, WORKFLOW = "BenchNoop", "BenchThree"
CALLERS = 64
RETRY_MAX = "200ms"

noop_service = restate.Service(SERVICE)
three_step = restate.Workflow(WORKFLOW)


async def noop_step(item: dict[str, Any]) -> dict[str, Any]:
    """AgentFlow's ``noop`` tool: the input back as the output."""
    return item


@noop_service.handler("noop")
async def noop(_ctx: restate.Context, item: dict[str, Any]) -> dict[str, Any]:
    return item


@three_step.main("run")
async def run(ctx: restate.WorkflowContext, item: dict[str, Any]) -> dict[str, Any]:
    for step in range(3):
        item = await ctx.run_typed(f"step-{step}", noop_step, item=item)
    return item


app = restate.app(services=[noop_service, three_step])

CONFIG = """\
base-dir = "{base}"
cluster-name = "af-bench"
node-name = "af-bench"
disable-telemetry = true
log-filter = "error"
bind-address = "127.0.0.1:{fabric}"
advertised-address = "http://127.0.0.1:{fabric}"

[default-retry-policy]
initial-interval = "10ms"
exponentiation-factor = 2.0
max-interval = "{retry_max}"
max-attempts = 10000

[ingress]
bind-address = "127.0.0.1:{ingress}"

[admin]
bind-address = "127.0.0.1:{admin}"
disable-web-ui = true
"""


class RestateServer:
    """restate-server under ``home`` on free loopback ports, the services' deployment registered."""

    def __init__(self, home: Path, timeout: float) -> None:
        binary = RESTATE_SERVER
        if not binary.exists():
            raise PeerMissing(f"{binary} not found: run `make bench-peers` (it installs @restatedev/restate-server)")
        self.home = home
        self.ingress, self.admin, fabric = free_port(), free_port(), free_port()
        config = home / "restate.toml"
        config.write_text(
            CONFIG.format(
                base=home / "restate", fabric=fabric, ingress=self.ingress, admin=self.admin, retry_max=RETRY_MAX
            )
        )
        log = home / "logs" / "restate-server.log"
        argv = [str(binary), "--config-file", str(config), "--listen-mode", "tcp", "--no-logo"]
        self.process = spawn("restate-server", argv, log)
        ready = functools.partial(_healthy, f"http://127.0.0.1:{self.admin}/health")
        wait_until("restate-server", ready, timeout=timeout, process=self.process, log=log)
        self.workers_port = free_port()
        try:
            self.register(timeout)
        except BaseException:
            self.stop()
            raise

    def worker_command(self) -> list[str]:
        return [sys.executable, "-m", "bench.restate_peer", "--port", str(self.workers_port)]

    def register(self, seconds: float) -> None:
        """Start one worker, register its URI as the deployment (Restate discovers the services), stop it."""
        log = self.home / "logs" / "bench-restate-register.log"
        process = spawn("restate worker", self.worker_command(), log)
        try:
            consuming = functools.partial(logged_since, log, 0, READY)
            wait_until("restate worker", consuming, timeout=seconds, process=process, log=log)
            answer = httpx.post(
                f"http://127.0.0.1:{self.admin}/deployments",
                json={"uri": f"http://127.0.0.1:{self.workers_port}", "force": True},
                timeout=seconds,
            )
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"registering the Restate deployment answered {answer.status_code}: {answer.text}")
        finally:
            stop(process.pid, timeout=10)
            process.wait()

    def stop(self) -> None:
        """Stop it by PID; both rows' peers call this, and the second finds it stopped."""
        if self.process.poll() is None:
            stop(self.process.pid, timeout=30)
            self.process.wait()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class RestatePeer:
    def __init__(self, server: RestateServer, steps: int, timeout: float) -> None:
        self.system = "restate" if steps == 1 else f"restate-{steps}step"
        self._server = server
        self._steps = steps
        self._timeout = timeout
        self._keys = itertools.count()
        self._connections: list[LeanHTTP] = []

    def parts(self) -> dict[str, int]:
        return {"restate-server": self._server.process.pid}

    def worker_command(self, index: int) -> tuple[list[str], dict[str, str]]:
        return self._server.worker_command(), {}

    async def open(self) -> None:
        """:data:`CALLERS` keep-alive connections to the ingress, one per caller (the lean client AgentFlow's
        rows use: httpx's CPU per request would be charged to Restate's rows)."""
        for _ in range(CALLERS):
            connection = LeanHTTP("127.0.0.1", self._server.ingress, "")
            await connection.connect()
            self._connections.append(connection)

    def _path(self) -> str:
        """The handler of one new invocation: the service's, or a workflow of a key of its own."""
        if self._steps == 1:
            return f"/{SERVICE}/noop"
        return f"/{WORKFLOW}/bench-{next(self._keys)}/run"

    def _item(self) -> bytes:
        return msgspec.json.encode({"i": next(self._keys)})

    async def _ask(self, connection: LeanHTTP, method: str, path: str, body: bytes = b"") -> bytes:
        status, answer = await asyncio.wait_for(connection.request(method, path, body), self._timeout)
        if status not in (200, 202):
            raise RuntimeError(f"Restate ingress answered {status} to {method} {path}: {answer[:300]!r}")
        return answer

    async def _call(self, connection: LeanHTTP) -> float:
        await self._ask(connection, "POST", self._path(), self._item())
        return time.perf_counter()

    async def reset(self) -> None:
        """Nothing to empty: each phase awaits every invocation it made."""

    async def round_trips(self, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            samples.append(await self._call(self._connections[0]) - started)
        return samples

    async def sustained(self, count: int) -> float:
        """Invocations per second, request-response, :data:`CALLERS` at once."""
        remaining = iter(range(count))
        started = time.perf_counter()

        async def caller(connection: LeanHTTP) -> float:
            last = started
            for _ in remaining:
                last = await self._call(connection)
            return last

        finished = await asyncio.gather(*(caller(connection) for connection in self._connections))
        return count / (max(finished) - started)

    async def submit(self, count: int) -> list[str]:
        """One-way invocations (``/send``), :data:`CALLERS` at once; their ids, in order."""
        ids: list[str] = [""] * count
        remaining = iter(range(count))

        async def sender(connection: LeanHTTP) -> None:
            for index in remaining:
                answer = await self._ask(connection, "POST", f"{self._path()}/send", self._item())
                ids[index] = msgspec.json.decode(answer)["invocationId"]

        await asyncio.gather(*(sender(connection) for connection in self._connections))
        return ids

    async def completions(self, submitted: list[str]) -> list[float]:
        """When each result arrived, sorted: attached to each invocation, :data:`CALLERS` at once."""
        queue = list(reversed(submitted))
        seen: list[float] = []

        async def attacher(connection: LeanHTTP) -> None:
            while queue:
                await self._ask(connection, "GET", f"/restate/invocation/{queue.pop()}/attach")
                seen.append(time.perf_counter())

        await asyncio.gather(*(attacher(connection) for connection in self._connections))
        return sorted(seen)

    async def close(self) -> None:
        for connection in self._connections:
            await connection.close()
        self._connections = []

    def stop(self) -> None:
        self._server.stop()


def start(home: Path, timeout: float) -> list[RestatePeer]:
    """The server, and the peers of its two rows (one-step, three-step), which share it."""
    server = RestateServer(home, timeout)
    return [RestatePeer(server, steps, timeout) for steps in (1, 3)]


def main() -> None:
    parser = argparse.ArgumentParser(description="A Restate worker of the benchmark: the services over hypercorn.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # SO_REUSEPORT: every worker binds the deployment's one port, and the kernel spreads connections among them.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(1024)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.loglevel = "WARNING"
    config.accesslog = None

    async def serving() -> None:
        asyncio.get_running_loop().call_soon(lambda: print(READY, flush=True))
        await serve(app, config)

    asyncio.run(serving())


if __name__ == "__main__":
    main()
