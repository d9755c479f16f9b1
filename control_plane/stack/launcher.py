"""``af up`` / ``af down`` / ``af status``: the whole stack on one machine, each part a real process.

nats-server (JetStream), PostgreSQL (``AF_DATABASE_URL`` or a cluster under ``AF_HOME``), with
``--local-model`` (or ``AF_LOCAL_MODEL=1``) the local model server (``local_model``: llama.cpp with
SmolLM2-135M-Instruct, the control plane's ``AF_LOCAL_MODEL_URL``), the control plane and N workers.
``$AF_HOME/stack.json`` records what runs, so ``af down`` and ``af status`` work from any shell, and
clients find the API and the local admin key there.
"""

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bus import InvalidName
from bus.commands import CommandParser
from control_plane.security.authentication import new_key
from control_plane.stack import doctor, local_model, nats, nats_identity, postgres
from control_plane.stack.processes import (
    StackError,
    alive,
    free_port,
    get_json,
    http_ok,
    spawn,
    stop,
    tcp_open,
    wait_until,
)
from control_plane.stack.settings import DEFAULT_PORT, StackSettings
from registry.db import ensure_database

STATE_FILE = "stack.json"
KEY_FILE = "admin.key"
NATS_DIR = "nats"
NATS_NODE = "nats-node-"
"""The part name of a node of ``af up --nats-cluster N``'s cluster, before its index."""
ANOTHER_CONTROL_PLANE = "control-plane-"
"""The part name of a control plane beside the stack's own (``--control-planes N``), before its index."""
READY_PATH = "/readyz"


@dataclass
class Part:
    name: str
    pid: int
    log: str
    stop_signal: int = signal.SIGTERM
    health: str = ""
    """A loopback URL that answers 200 while the part is healthy (the local model's ``/health``)."""


@dataclass
class StackState:
    home: str
    api_url: str
    nats_url: str
    database_url: str
    parts: list[Part] = field(default_factory=list)
    stack_id: str = ""
    """The installation's id, as the API says it (``/healthz``): clients tie their logins to it."""
    concurrency: int = 8
    """Tasks each worker runs at once."""
    cluster: str = ""
    """The PostgreSQL cluster's directory; empty with ``AF_DATABASE_URL``."""
    temporary: list[str] = field(default_factory=list)
    """Directories of this stack outside ``home`` (a PostgreSQL cluster's), deleted by ``af down``."""
    local_model_url: str = ""
    """The local model server's OpenAI-compatible base URL, when the stack runs one."""
    nats_route_ports: list[int] = field(default_factory=list)
    """With ``--nats-cluster N``: the port each node takes routes on (its client port is in ``nats_url``)."""

    def save(self) -> None:
        path = Path(self.home) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))

    @staticmethod
    def read(home: Path) -> "StackState | None":
        try:
            raw = json.loads((home / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        raw["parts"] = [Part(**p) for p in raw["parts"]]
        return StackState(**raw)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _step(label: str) -> float:
    print(f"  {label:<28}", end="", file=sys.stderr, flush=True)
    return time.monotonic()


def _done(started: float, detail: str) -> None:
    print(f"ok  {detail} ({time.monotonic() - started:.1f} s)", file=sys.stderr, flush=True)


def _api_port(settings: StackSettings) -> int:
    if settings.port:
        return settings.port
    return free_port() if tcp_open(DEFAULT_PORT) else DEFAULT_PORT


def up(
    settings: StackSettings, workers: int, concurrency: int, nats_nodes: int = 1, control_planes: int = 1
) -> StackState:
    """Start every part, recording each in stack.json as soon as it runs (so a failure can be undone); on a
    stack some of whose parts died, start those again instead (``repair``)."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    existing = StackState.read(home)
    if existing and any(alive(p.pid) for p in existing.parts):
        if all(alive(p.pid) for p in existing.parts):
            raise StackError(f"a stack is already running from {home} (af status shows it; af down stops it)")
        return repair(settings, existing)
    if existing:  # a stack that died: what it left behind goes before a new one is recorded
        down(home, quiet=True)
    state = StackState(str(home), "", "", "", concurrency=concurrency)
    if not settings.database_url:
        state.cluster = str(_postgres_dir(home))
        if state.cluster != str(home / "postgres"):
            state.temporary.append(state.cluster)
        state.save()
    say(f"Starting AgentFlow from {home}")
    try:
        nats_identity.Identities.create(home / NATS_DIR)
        if nats_nodes > 1:
            _run_step(f"NATS cluster ({nats_nodes} nodes)", lambda: _start_nats_cluster(state, nats_nodes))
        else:
            _run_step("nats-server (JetStream)", lambda: _start_nats(state))
        if settings.database_url:
            state.database_url = settings.database_url
            _done(_step("PostgreSQL"), "AF_DATABASE_URL")
        else:
            _run_step("PostgreSQL", lambda: _start_postgres(state))
        if settings.local_model:
            _run_step("local model (llama.cpp)", lambda: _start_local_model(state))
        key_file = home / KEY_FILE
        if not key_file.exists():
            key_file.touch(mode=0o600)
            key_file.write_text(new_key() + "\n")
        _run_step("control plane", lambda: _start_control_plane(settings, state))
        for index in range(2, control_planes + 1):
            _run_step(f"control plane {index}", functools.partial(start_another_control_plane, settings, state, index))
        sandbox = settings.sandbox or ("runsc" if shutil.which("runsc") else "process")
        if workers and sandbox == "process":
            say(
                "  WARNING: workers use the 'process' sandbox: tools run WITHOUT isolation (development only);"
                " install gVisor (apt-get install runsc) for real sandboxes"
            )
        for index in range(1, workers + 1):
            _run_step(f"worker {index}", functools.partial(_start_worker, settings, state, index))
    except BaseException:
        say("\nstart failed; stopping what was started")
        down(home, quiet=True)
        raise
    return state


def repair(settings: StackSettings, state: StackState) -> StackState:
    """Start again, in start order, each part of ``state`` that died, on the port it had; the new process
    takes the dead one's place in stack.json (so ``af down`` stops it). A failure leaves the rest running."""
    say(f"Restarting the parts of the stack in {state.home} that exited")
    for part in list(state.parts):
        if alive(part.pid):
            continue
        if part.name == "nats-server":
            _run_step(part.name, lambda: _start_nats(state))
        elif part.name.startswith(NATS_NODE):
            _run_step(part.name, functools.partial(_start_nats_node, state, int(part.name.removeprefix(NATS_NODE))))
        elif part.name == "postgres":
            _run_step(part.name, lambda: _start_postgres(state))
        elif part.name == "local-model":
            _run_step(part.name, lambda: _start_local_model(state))
        elif part.name == "control-plane":
            _run_step(part.name, lambda: _start_control_plane(settings, state))
        elif part.name.startswith(ANOTHER_CONTROL_PLANE):
            index, port = int(part.name.removeprefix(ANOTHER_CONTROL_PLANE)), _port(part.health) or 0
            _run_step(part.name, functools.partial(start_another_control_plane, settings, state, index, port))
        else:
            index = int(part.name.removeprefix("worker-"))
            _run_step(part.name, functools.partial(_start_worker, settings, state, index))
    return state


def _run_step(label: str, start: Callable[[], str]) -> None:
    started = _step(label)
    _done(started, start())


def _record(state: StackState, part: Part) -> None:
    """Put ``part`` in stack.json, in place of the part of that name if there was one."""
    state.parts = [part if p.name == part.name else p for p in state.parts]
    if part not in state.parts:
        state.parts.append(part)
    state.save()


def _port(url: str) -> int | None:
    return urlsplit(url).port if url else None


def _start_nats(state: StackState) -> str:
    home = Path(state.home)
    config = nats_identities(home).config
    server = nats.start(home / NATS_DIR, home / "logs" / "nats.log", port=_port(state.nats_url), config=config)
    state.nats_url = server.url
    _record(state, Part("nats-server", server.process.pid, str(server.log)))
    return f"{server.url}, pid {server.process.pid}"


def _start_nats_cluster(state: StackState, size: int) -> str:
    home = Path(state.home)
    config = nats_identities(home).config
    servers = nats.start_cluster(home / NATS_DIR, home / "logs", size, config=config)
    state.nats_url = nats.urls(servers)
    state.nats_route_ports = [server.route.port for server in servers if server.route is not None]
    for index, server in enumerate(servers):
        _record(state, Part(f"{NATS_NODE}{index}", server.process.pid, str(server.log)))
    return f"{state.nats_url}, pids {', '.join(str(server.process.pid) for server in servers)}"


def _start_nats_node(state: StackState, index: int) -> str:
    """One node of the stack's cluster again, on its ports, from its store: it catches up from the others."""
    home = Path(state.home)
    route = nats.node_route(index, state.nats_route_ports)
    port = _port(state.nats_url.split(",")[index])
    log = home / "logs" / f"nats-{index}.log"
    server = nats.start(home / NATS_DIR / route.name, log, port=port, config=nats_identities(home).config, route=route)
    _record(state, Part(f"{NATS_NODE}{index}", server.process.pid, str(server.log)))
    return f"{server.url}, pid {server.process.pid}"


def _start_postgres(state: StackState) -> str:
    log = Path(state.home) / "logs" / "postgres.log"
    # The stack.json of an af up before clusters were recorded names none: it was always home/postgres.
    cluster = Path(state.cluster or Path(state.home) / "postgres")
    pg = postgres.start(cluster, log, port=_port(state.database_url))
    state.database_url = pg.dsn
    _record(state, Part("postgres", pg.process.pid, str(pg.log), signal.SIGINT))
    asyncio.run(ensure_database(pg.dsn, postgres.DATABASE))
    where = ""
    if state.temporary:
        user = postgres.RunAs.for_postgres().name
        where = f"; data in {state.cluster}, deleted by af down ({user} cannot enter {state.home})"
    return f"127.0.0.1:{pg.port}, pid {pg.process.pid}{where}"


def _start_local_model(state: StackState) -> str:
    log = Path(state.home) / "logs" / "local-model.log"
    model = local_model.start(log, port=_port(state.local_model_url))
    state.local_model_url = model.url
    _record(state, Part("local-model", model.process.pid, str(model.log), health=model.health_url))
    return f"{model.url}, pid {model.process.pid}"


def _start_control_plane(settings: StackSettings, state: StackState) -> str:
    home = Path(state.home)
    port = _port(state.api_url) or _api_port(settings)
    log = home / "logs" / "control-plane.log"
    process = spawn(
        "control plane",
        [sys.executable, "-m", "control_plane", "start"],
        log,
        env=_control_plane_env(settings, state, port),
    )
    state.api_url = f"http://127.0.0.1:{port}"
    _record(state, Part("control-plane", process.pid, str(log)))
    wait_until("control plane", lambda: http_ok(f"{state.api_url}/readyz"), timeout=60, process=process, log=log)
    state.stack_id = str(get_json(f"{state.api_url}/healthz")["stack_id"])
    state.save()
    return f"{state.api_url}, pid {process.pid}"


def start_another_control_plane(settings: StackSettings, state: StackState, index: int, port: int = 0) -> str:
    """Control plane ``index`` (2, 3, ...) beside the stack's own, on ``port`` (a free one if 0), on the same
    servers; ``down`` stops it with the rest. Its URL."""
    port = port or free_port()
    log = Path(state.home) / "logs" / f"control-plane-{index}.log"
    argv = [sys.executable, "-m", "control_plane", "start"]
    process = spawn("control plane", argv, log, env=_control_plane_env(settings, state, port))
    url = f"http://127.0.0.1:{port}"
    _record(state, Part(f"{ANOTHER_CONTROL_PLANE}{index}", process.pid, str(log), health=f"{url}{READY_PATH}"))
    wait_until("control plane", lambda: http_ok(f"{url}{READY_PATH}"), timeout=60, process=process, log=log)
    return url


def more_api_urls(state: StackState) -> list[str]:
    """The API URLs of the control planes beside the stack's own (``af up --control-planes N``)."""
    return [
        p.health.removesuffix(READY_PATH) for p in state.parts if p.name.startswith(ANOTHER_CONTROL_PLANE) and p.health
    ]


def _control_plane_env(settings: StackSettings, state: StackState, port: int) -> dict[str, str]:
    home = Path(state.home)
    env = {
        **settings.env,
        "AF_NATS_URL": state.nats_url,
        **nats_identities(home).env(nats_identity.CONTROL_PLANE),
        "AF_DATABASE_URL": state.database_url,
        "AF_BOOTSTRAP_KEY_FILE": str(home / KEY_FILE),
        "AF_HOME": str(home),  # its secrets' master key file is made there (master.key) at its first start
        "AF_PORT": str(port),
        "AF_HOST": "127.0.0.1",
    }
    if state.local_model_url:
        env["AF_LOCAL_MODEL_URL"] = state.local_model_url
    if state.nats_route_ports:  # every stream and bucket on every node, unless the user asks for fewer
        env.setdefault("AF_NATS_REPLICAS", str(len(state.nats_route_ports)))
    return env


def _postgres_dir(home: Path) -> Path:
    """Where the stack's PostgreSQL cluster goes: ``home/postgres``, unless the user PostgreSQL runs as cannot
    enter ``home``; then a fresh temporary directory (a cluster already in ``home`` is an error)."""
    wanted = home / "postgres"
    run_as = postgres.RunAs.for_postgres()
    if run_as.can_enter(home):
        return wanted
    if (wanted / "PG_VERSION").exists():
        raise StackError(
            f"PostgreSQL runs as {run_as.name}, who cannot enter {home} where its cluster is: let it"
            f" (chmod o+x {home} and each directory above it) or choose another AF_HOME"
        )
    return postgres.scratch_dir(run_as)


def _start_worker(settings: StackSettings, state: StackState, index: int) -> str:
    home = Path(state.home)
    log = home / "logs" / f"worker-{index}.log"
    # The worker names itself as `af worker start` does (<host>-<pid>): one id of each worker's, never one
    # that the user's environment would give every worker alike.
    env = {
        **{k: v for k, v in settings.env.items() if k != "AF_WORKER_ID"},
        "AF_NATS_URL": state.nats_url,
        **nats_identities(home).env(nats_identity.worker_user("default")),
    }
    argv = [sys.executable, "-m", "worker", "start", "--queue", "default", "--concurrency", str(state.concurrency)]
    process = spawn(f"worker {index}", argv, log, env=env)
    _record(state, Part(f"worker-{index}", process.pid, str(log)))
    time.sleep(0.2)
    if process.poll() is not None:
        raise StackError(f"worker {index} exited at start; see {log}")
    return f"queue default, pid {process.pid}"


def nats_identities(home: Path) -> nats_identity.Identities:
    """The NATS users of the stack in ``home``."""
    return nats_identity.Identities.load(home / NATS_DIR)


def grant_worker(home: Path, tenant: str, queue: str) -> dict[str, str]:
    """Let ``tenant``'s workers pull ``queue`` on the running stack's NATS server; returns their settings."""
    state = StackState.read(home)
    servers = [p for p in state.parts if p.name.startswith("nats-") and alive(p.pid)] if state else []
    if state is None or not servers:
        raise StackError(f"no stack is running from {home} (af up starts one)")
    identities = nats_identities(home)
    if identities.grant(tenant, queue):
        for server in servers:
            nats.reload(server.pid, Path(server.log))
    return {"AF_NATS_URL": state.nats_url, **identities.env(nats_identity.worker_user(tenant))}


def exec_worker(settings: StackSettings, args: list[str]) -> None:
    """``af worker start``: a worker of the running stack, with its tenant's NATS identity, unless the
    environment says which server and user to use."""
    home, env = settings.home, dict(settings.env)
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tenant", default=env.get("AF_TENANT", "default"))
    parser.add_argument("--queue", default=env.get("AF_QUEUE", "default"))
    parser.add_argument("--nats-url", default=env.get("AF_NATS_URL"))
    known, _ = parser.parse_known_args(args)
    if known.nats_url is None and "AF_NATS_USER" not in env and StackState.read(home) is not None:
        try:
            env.update(grant_worker(home, known.tenant, known.queue))
        except InvalidName as error:
            raise StackError(str(error)) from None
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "worker", "start", *args], env)


_STOP_ORDER = ("worker", "control-plane", "local-model", "postgres", "nats-")


def down(home: Path, *, quiet: bool = False) -> int:
    """Stop every recorded part by PID, workers first (they drain); returns how many were running."""
    state = StackState.read(home)
    if state is None:
        return 0
    stopped = 0
    ordered = sorted(state.parts, key=lambda p: next(i for i, n in enumerate(_STOP_ORDER) if p.name.startswith(n)))
    for part in ordered:
        if not alive(part.pid):
            continue
        started = time.monotonic()
        killed = stop(part.pid, sig=part.stop_signal, timeout=40.0)
        stopped += 1
        if not quiet:
            how = "killed after the grace period" if killed else "stopped"
            say(f"  {part.name:<16} pid {part.pid:<8} {how} ({time.monotonic() - started:.1f} s)")
    for directory in state.temporary:
        shutil.rmtree(directory, ignore_errors=True)
    (home / STATE_FILE).unlink(missing_ok=True)
    return stopped


def status(home: Path) -> dict[str, Any]:
    state = StackState.read(home)
    if state is None:
        return {"home": str(home), "running": False, "parts": []}
    ready = http_ok(f"{state.api_url}/readyz") if state.api_url else False
    parts = [_part_status(p) for p in state.parts]
    return {
        "home": str(home),
        "running": any(p["alive"] for p in parts),
        "api_url": state.api_url,
        "api_ready": ready,
        "nats_url": state.nats_url,
        "database_url": state.database_url,
        "local_model_url": state.local_model_url,
        "parts": parts,
    }


def _part_status(part: Part) -> dict[str, Any]:
    report: dict[str, Any] = {"name": part.name, "pid": part.pid, "alive": alive(part.pid), "log": part.log}
    if part.health:
        report["healthy"] = report["alive"] and http_ok(part.health)
    return report


def _state_of(part: dict[str, Any]) -> str:
    if not part["alive"]:
        return "exited"
    if "healthy" in part:
        return "running, healthy" if part["healthy"] else "running, NOT healthy"
    return "running"


def _print_status(report: dict[str, Any]) -> None:
    if not report["parts"]:
        print(f"no stack is running from {report['home']}")
        return
    print(
        f"AgentFlow stack in {report['home']}: API {report['api_url']} "
        f"{'ready' if report['api_ready'] else 'NOT ready'}"
    )
    print(f"  {'PROCESS':<16} {'PID':<8} STATE")
    for part in report["parts"]:
        print(f"  {part['name']:<16} {part['pid']:<8} {_state_of(part)}")
    if not all(part["alive"] for part in report["parts"]):
        say(f"af up starts again what exited (its logs are in {Path(report['home']) / 'logs'}); af down stops the rest")


def _doctor(settings: StackSettings, output: str) -> None:
    state = StackState.read(settings.home)
    running = state.api_url if state and any(alive(part.pid) for part in state.parts) else ""
    checks = doctor.diagnose(settings, running)
    print(json.dumps(doctor.report(checks), indent=2) if output == "json" else doctor.render(checks))
    if not doctor.healthy(checks):
        raise SystemExit(1)


def _wait_for_signal(home: Path, state: StackState) -> None:
    stop_now = False

    def on_signal(signum: int, _: object) -> None:
        nonlocal stop_now
        stop_now = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say("AgentFlow is up. Press Ctrl-C to stop.")
    while not stop_now:
        dead = [p.name for p in state.parts if not alive(p.pid)]
        if dead:
            say(f"{', '.join(dead)} exited; stopping the stack (see {home / 'logs'})")
            break
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(prog="af", description="The AgentFlow embedded stack.", usage="%(prog)s COMMAND [OPTIONS]")
    commands = parser.add_subparsers(dest="command", required=True, prog="af")
    start = commands.add_parser(
        "up",
        description="Start the embedded stack on this machine: NATS, PostgreSQL, a control plane and workers, "
        "each a process of its own (their logs and state under AF_HOME); Ctrl-C stops it unless --detach.",
    )
    start.add_argument("--workers", metavar="N", type=int, default=1, help="Worker processes (default 1).")
    start.add_argument(
        "--concurrency", metavar="N", type=int, default=8, help="Tasks each worker runs at once (default 8)."
    )
    start.add_argument("--detach", action="store_true", help="Leave the stack running and return.")
    start.add_argument(
        "--control-planes",
        metavar="N",
        type=int,
        default=1,
        help="Control plane processes on the same servers (default 1; at most 5): one leads the duties that must "
        "run once, the others take over when it dies; the API is served by each, on its own port (af status).",
    )
    start.add_argument(
        "--nats-cluster",
        metavar="N",
        type=int,
        default=1,
        help="Run NATS as a cluster of N nodes on loopback (3: one may fail), with AgentFlow's streams and "
        "buckets at N replicas (at most 5); default 1, a single server.",
    )
    start.add_argument(
        "--local-model",
        action="store_true",
        help="Also start the local model server (llama.cpp with SmolLM2-135M-Instruct): the gateway's `local` "
        "model (AF_LOCAL_MODEL=1 does the same).",
    )
    commands.add_parser("down", description="Stop the embedded stack: workers first (they drain), then the rest.")
    show = commands.add_parser("status", description="Show each process of the embedded stack and its health.")
    show.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="How to print the report (default table)."
    )
    doctor_command = commands.add_parser(
        "doctor",
        description="Check that this machine has what the stack needs (nats-server, PostgreSQL, AF_HOME, the "
        "API port, runsc and its platform, a C compiler, the local model when enabled), each with the fix for "
        "what is missing; exit 1 when something required is missing.",
    )
    doctor_command.add_argument(
        "--local-model", action="store_true", help="Check the local model as af up --local-model needs it."
    )
    doctor_command.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="How to print the report (default table)."
    )
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = StackSettings.read(os.environ)
    except StackError as error:
        print(f"af: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    home = settings.home
    if argv[:1] == ["worker"]:  # `af worker start`: every argument is the worker's
        try:
            exec_worker(settings, argv[1:])
        except StackError as error:
            print(f"af worker: {error}", file=sys.stderr)
            raise SystemExit(1) from None
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command's own parser, "af up: ...", as every af command does
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if args.command == "up":
            if args.workers < 0:
                parser.error("--workers must be 0 or more")
            if not 1 <= args.nats_cluster <= 5:
                parser.error("--nats-cluster must be 1 to 5 (JetStream keeps at most 5 replicas)")
            if not 1 <= args.control_planes <= 5:
                parser.error("--control-planes must be 1 to 5")
            if args.local_model:
                settings = dataclasses.replace(settings, local_model=True)
            state = up(settings, args.workers, args.concurrency, args.nats_cluster, args.control_planes)
            if args.detach:
                say(f"AgentFlow is up: API {state.api_url}; stop it with `af down`")
                return
            _wait_for_signal(home, state)
            say("Stopping AgentFlow")
            down(home)
        elif args.command == "doctor":
            if args.local_model:
                settings = dataclasses.replace(settings, local_model=True)
            _doctor(settings, args.output)
        elif args.command == "down":
            if down(home) == 0:
                say(f"no stack was running from {home}")
        else:
            report = status(home)
            if args.output == "json":
                print(json.dumps(report, indent=2))
            else:
                _print_status(report)
            if not all(part["alive"] for part in report["parts"]):
                raise SystemExit(1)
    except StackError as error:
        print(f"af: {error}", file=sys.stderr)
        raise SystemExit(1) from None
