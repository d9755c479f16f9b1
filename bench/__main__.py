"""``af bench`` / ``make bench``: the durable path beside raw JetStream, in one run on this machine.

Every repetition measures, in turn: raw JetStream (nats-py) with 1 and 2 worker processes, AgentFlow's
durable path with the built-in ``noop`` tool (no sandbox: the platform itself) with 1 and 2 workers,
and AgentFlow with a tool in the process sandbox and in gVisor (runsc: cold, from the warm pool with the tool
prestarted and without, and one sandbox reused across calls), with the workers' CPU per call; with
``--peers``, the same noop task through Celery (Redis) and taskiq (NATS JetStream) too, and 1-step and 3-step
workflows through DBOS and Restate beside AgentFlow's 3-step DAG (``bench/peers.py``).
Reported: per-task latency one at a time (p50/p95/p99, HTTP submit included for AgentFlow), sustained tasks/s,
the drain rate of a pre-filled queue (tasks/s over the last 90% of results once workers start), CPU per
task by process, the median of the repetitions, and AgentFlow's ratios to raw JetStream and to each peer.
Unless ``--no-planners``, each repetition ends with the planners' phases (``bench/planners.py``): µs per
decision of each planner replaying a whole run of a 1,000-node workflow, and the end-to-end time of a 100-step
DAG with fan-out 10; ``--only planners`` runs those alone. The gateway phase (``bench/gateway.py``; ``--only
gateway`` alone) measures a model call's overhead through AgentFlow's gateway, beside LiteLLM's proxy with
``--peers``.
"""

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import uvloop

from bench import agent_turns, gateway, local_model, peers, planners, raw
from bench.agentflow_path import AgentFlowClient
from bench.stats import median, percentile, self_cpu_seconds, tree_cpu_seconds
from bus.commands import CommandParser
from control_plane.stack import launcher as stack
from control_plane.stack import nats_identity
from control_plane.stack.processes import alive, spawn, stop, wait_until
from control_plane.stack.settings import StackSettings

T = TypeVar("T")

THREE_STEP = "bench-three-step@1.0.0"
ECHO_COMMAND = ["python3", "-c", "import sys; sys.stdout.write(sys.stdin.read())"]
ECHO_TOOLS = {
    "bench-echo": {},  # prestarted in a warm sandbox, the default
    "bench-echo-exec": {"prestart": False},  # started in the warm sandbox when its call comes
    "bench-echo-reuse": {"reuse": True},
}
"""The sandboxed phases' tool, in the runtimes they compare."""
SANDBOX_PAUSE_SECONDS = 0.5
"""Between the sandboxed latency phase's calls: a warm sandbox boots in 200-300 ms here."""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.home = Path(tempfile.mkdtemp(prefix="af-bench-"))
        self.home.chmod(0o755)
        self.state: stack.StackState | None = None
        self.nats_url = ""
        self.workers: list[subprocess.Popen[bytes]] = []
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.peers: list[peers.Peer] = []
        self.gateway_servers = gateway.Servers(self.home)
        self.gateway_targets: list[gateway.Target] = []
        self.more_api_urls: list[str] = []
        """The control planes beside the stack's own (``--control-planes``): submits are spread over all."""

    # --- processes ----------------------------------------------------------------------------------

    def start(self) -> None:
        settings = dataclasses.replace(StackSettings.read(os.environ), home=self.home)
        if self.args.local_model:
            settings = dataclasses.replace(settings, local_model=True)
        self.state = stack.up(
            settings,
            workers=0,
            concurrency=1,
            nats_nodes=self.args.nats_cluster,
            control_planes=self.args.control_planes,
        )
        self.more_api_urls = stack.more_api_urls(self.state)
        if self.args.peers and self.args.only is None:
            postgres_pid = self._parts().get("postgres", 0)
            self.peers = peers.start(
                self.home, self.wait_seconds(), database_url=self.state.database_url, postgres_pid=postgres_pid
            )
        # The benchmark's own clients and the raw baseline use subjects of their own: they connect as the admin.
        identities = stack.nats_identities(self.home)
        self.nats_url = ",".join(identities.url(url) for url in self.state.nats_url.split(","))
        if self.gateway_on():
            self.gateway_servers.start_upstream()

    def agents_on(self) -> bool:
        return self.args.agent_runs > 0 and self.args.sandbox is None and self.args.only in (None, "agents")

    async def agent_phases(self, index: int) -> None:
        """The platform's time per agent turn: mock model, noop tool, one worker, one run at a time."""
        assert self.state is not None
        _progress(f"[{index + 1}/{self.args.repeat}] agents: a turn alone, two tool calls, ten turns")
        self.set_workers("agentflow", 1)
        token = (self.home / stack.KEY_FILE).read_text().strip()
        figures = await agent_turns.measure(self.state.api_url, self.nats_url, token, self.args.agent_runs)
        for name, row in figures.items():
            for metric, value in row.items():
                self.record(f"{AGENT}{name}", metric, value)

    def gateway_on(self) -> bool:
        return self.args.gateway_calls > 0 and self.args.sandbox is None and self.args.only in (None, "gateway")

    def stop(self) -> None:
        try:
            self.set_workers(None, 0)
        finally:
            for peer in self.peers:
                peer.stop()
            self.gateway_servers.stop()
            stack.down(self.home, quiet=True)
            shutil.rmtree(self.home, ignore_errors=True)

    def wait_seconds(self) -> float:
        """The bound on any wait for results: generous for a machine doing 20 tasks/s."""
        return 60.0 + float(self.args.tasks) / 20

    def set_workers(
        self,
        kind: str | None,
        count: int,
        concurrency: int = 64,
        sandbox: str = "process",
        warm: int = 0,
        *,
        peer: peers.Peer | None = None,
        ready: bool = True,
    ) -> None:
        """Replace the running workers with ``count`` of ``kind`` (a peer's when ``peer`` is given).

        With ``ready``, return once they consume: a peer's worker prints :data:`peers.READY`, ours get 0.8 s.
        Drains start workers without waiting, so that the client is already watching for the first result.
        """
        for process in self.workers:
            _stop_tree(process)
        self.workers = []
        if count == 0:
            return
        assert self.state is not None
        starting: list[tuple[subprocess.Popen[bytes], Path, int]] = []
        for index in range(count):
            log = self.home / "logs" / f"bench-{kind}-{index}.log"
            env = {**os.environ, "AF_RUNSC_WARM": str(warm)}
            if peer is not None:
                argv, extra_env = peer.worker_command(index)
                env.update(extra_env)
            elif kind == "raw":
                argv = [sys.executable, "-m", "bench.raw", "--nats-url", self.nats_url]
                argv += ["--concurrency", str(concurrency)]
            else:
                argv = [sys.executable, "-m", "worker", "start", "--concurrency", str(concurrency)]
                argv += ["--nats-url", self.state.nats_url, "--worker-id", f"bench-{index}", "--sandbox", sandbox]
                env.update(stack.nats_identities(self.home).env(nats_identity.worker_user("default")))
            offset = log.stat().st_size if log.exists() else 0
            self.workers.append(spawn(f"{kind} worker", argv, log, env=env))
            starting.append((self.workers[-1], log, offset))
        if not ready:
            return
        if peer is None:
            time.sleep(0.8)
            return
        for process, log, offset in starting:
            consuming = functools.partial(peers.logged_since, log, offset, peers.READY)
            wait_until(f"{kind} worker", consuming, timeout=60, process=process, log=log)

    def _parts(self) -> dict[str, int]:
        assert self.state is not None
        # Every NATS node and every control plane: their CPU adds up under the group's name (``_group``).
        servers = ("nats-server", "nats-node-", "control-plane", "postgres")
        return {p.name: p.pid for p in self.state.parts if p.name.startswith(servers)}

    # --- measurements -------------------------------------------------------------------------------

    def record(self, system: str, metric: str, value: float) -> None:
        self.samples.setdefault(system, {}).setdefault(metric, []).append(value)

    async def measured(
        self, system: str, tasks: int, work: Callable[[], Awaitable[float]], parts: dict[str, int] | None = None
    ) -> float:
        """Run ``work`` (a sustained phase) and record CPU µs per task of each process tree.

        ``parts`` are the servers to account (AgentFlow's stack by default); the worker processes of the phase
        add up into one ``workers`` figure.
        """
        servers = self._parts() if parts is None else parts
        pids = {**servers, **{f"worker-{i}": w.pid for i, w in enumerate(self.workers)}}

        def cpu(name: str) -> float:
            # A worker's sandboxes (runsc's clients, sandboxes and gofers, the process sandbox's tools) exit
            # during the phase: their CPU is counted once the worker has reaped them.
            return tree_cpu_seconds(pids[name], reaped=name.startswith("worker-"))

        before = {name: cpu(name) for name in pids}
        client_before = self_cpu_seconds()
        rate = await work()
        used: dict[str, float] = {}
        for name in pids:
            key = _group(name)
            used[key] = used.get(key, 0.0) + (cpu(name) - before[name]) * 1e6 / tasks
        used["client"] = (self_cpu_seconds() - client_before) * 1e6 / tasks
        for key, value in used.items():
            self.record(system, f"cpu_us:{key}", value)
        return rate

    async def drained(
        self,
        system: str,
        count: int,
        submit: Callable[[], Awaitable[T]],
        completions: Callable[[T], Awaitable[list[float]]],
        peer: peers.Peer | None = None,
    ) -> None:
        """Queue tasks with no worker running, start ``count`` workers, and record the drain rate.

        The rate is tasks/s from the result at the 10% mark to the last: neither the workers' start nor a first
        burst of results (a batch the client or the control plane held back) counts.
        """
        kind = system if peer is None else peer.system
        self.set_workers(kind, 0)
        submitted = await submit()
        self.set_workers(kind, count, peer=peer, ready=False)
        finished = sorted(await completions(submitted))
        mark = len(finished) // 10
        elapsed = max(finished[-1] - finished[mark], 1e-6)
        self.record(system, f"drain_per_s_{count}w", (len(finished) - 1 - mark) / elapsed)

    def latency(self, system: str, samples: list[float]) -> None:
        for q in (50, 95, 99):
            self.record(system, f"p{q}_ms", percentile(samples, q) * 1000)

    async def repetition(self, index: int) -> None:
        if self.args.sandbox is not None:
            await self.sandbox_phases(index)
            return
        if self.args.only is None:
            await self.task_phases(index)
        if self.gateway_on():
            await self.gateway_phases(index)
        if self.agents_on():
            await self.agent_phases(index)
        if self.args.planners and self.args.only in (None, "planners"):
            await self.planner_phases(index)

    async def gateway_phases(self, index: int) -> None:
        """One model call sent straight to the upstream, through AgentFlow's gateway and through LiteLLM's."""
        self.set_workers("agentflow", 0)
        for target in self.gateway_targets:
            _progress(f"[{index + 1}/{self.args.repeat}] model gateway: {target.system}, 1 and 50 callers")
            for metric, value in (await gateway.measure(target, self.args.gateway_calls)).items():
                self.record(f"gw-{target.system}", metric, value)
        if self.args.local_model:
            _progress(f"[{index + 1}/{self.args.repeat}] the local model through the gateway, 128-token answers")
            agentflow = next(target for target in self.gateway_targets if target.system == "agentflow")
            for metric, value in (await local_model.speed(agentflow.base, key=agentflow.key)).items():
                self.record("local-model", metric, value)

    async def task_phases(self, index: int) -> None:
        args = self.args
        for count in (1, 2):
            _progress(f"[{index + 1}/{args.repeat}] raw JetStream, {count} worker(s)")
            self.set_workers("raw", count)
            async with raw.RawClient(self.nats_url) as client:
                await raw.reset_streams(client._js)
                self.set_workers("raw", count)
                if count == 1:
                    await client.round_trips(20)
                    self.latency("raw", await client.round_trips(args.latency_runs))
                rate = await self.measured("raw", args.tasks, lambda: client.sustained(args.tasks))
                self.record("raw", f"tasks_per_s_{count}w", rate)

        async with raw.RawClient(self.nats_url) as client:
            for count in (1, 2):
                _progress(f"[{index + 1}/{args.repeat}] raw JetStream, drain with {count} worker(s)")
                self.set_workers("raw", 0)
                await raw.reset_streams(client._js)
                await self.drained(
                    "raw",
                    count,
                    lambda: _raw_submit(client, args.tasks),
                    lambda _: _raw_completions(client, args.tasks, self.wait_seconds()),
                )

        await self.agentflow_phases(index, "agentflow", "noop")
        await self.agentflow_phases(index, "agentflow-3step", "3-step workflow", workflow=THREE_STEP)

        for peer in self.peers:
            await self.peer_phases(index, peer)

        await self.sandbox_phases(index)

    async def agentflow_phases(self, index: int, system: str, what: str, *, workflow: str = "") -> None:
        """AgentFlow's rows of the ``noop`` tool, or of ``workflow`` (its steps ``noop``), without a sandbox."""
        args = self.args
        assert self.state is not None
        token = (self.home / stack.KEY_FILE).read_text().strip()
        for count in (1, 2):
            _progress(f"[{index + 1}/{args.repeat}] AgentFlow {what}, {count} worker(s)")
            self.set_workers("agentflow", count)
            async with AgentFlowClient(
                self.state.api_url, self.nats_url, token, "noop", workflow=workflow, more_urls=self.more_api_urls
            ) as af:
                if count == 1:
                    await af.round_trips(20)
                    self.latency(system, await af.round_trips(args.latency_runs))
                rate = await self.measured(system, args.tasks, lambda: af.sustained(args.tasks))
                self.record(system, f"tasks_per_s_{count}w", rate)

        async with AgentFlowClient(
            self.state.api_url, self.nats_url, token, "noop", workflow=workflow, more_urls=self.more_api_urls
        ) as af:
            for count in (1, 2):
                _progress(f"[{index + 1}/{args.repeat}] AgentFlow {what}, drain with {count} worker(s)")
                await self.drained(
                    system,
                    count,
                    lambda: _agentflow_submit(af, args.tasks),
                    lambda run_ids: _agentflow_completions(af, run_ids, self.wait_seconds()),
                )

    async def sandbox_phases(self, index: int) -> None:
        """The echo tool in each sandbox: latency one at a time, then sustained rates with 1 and 2 workers."""
        args = self.args
        assert self.state is not None
        token = (self.home / stack.KEY_FILE).read_text().strip()
        for system, sandbox, warm, tool in self.sandboxes():
            for count in (1, 2):
                _progress(f"[{index + 1}/{args.repeat}] AgentFlow {system}, {count} worker(s)")
                self.set_workers("agentflow", count, concurrency=4, sandbox=sandbox, warm=warm)
                async with AgentFlowClient(self.state.api_url, self.nats_url, token, tool) as af:
                    if count == 1:
                        # A first call starts the worker's pool; then one call at a time, paced so that a warm
                        # pool refills between them (the sustained phase shows what it costs when it cannot).
                        await af.round_trips(1)
                        runs = max(10, args.latency_runs // 10)
                        self.latency(system, await af.round_trips(runs, pause=SANDBOX_PAUSE_SECONDS))
                    rate = await self.measured(
                        system, args.sandbox_tasks, lambda: af.sustained(args.sandbox_tasks, batch=50)
                    )
                    self.record(system, f"tasks_per_s_{count}w", rate)

    async def planner_phases(self, index: int) -> None:
        """Each planner replaying a whole run with no worker running, then the fan-out DAG end to end."""
        args = self.args
        self.set_workers("agentflow", 0)
        if index == 0:
            planners.warm_up()
        for kind in planners.KINDS:
            _progress(f"[{index + 1}/{args.repeat}] {kind} planner, a run of a {args.planner_nodes}-node workflow")
            for metric, value in planners.measure(kind, args.planner_nodes).items():
                self.record(f"{PLANNER}{kind}", metric, value)
        if not args.fanout_runs:
            return
        layers, width = args.fanout_layers, args.fanout_width
        _progress(f"[{index + 1}/{args.repeat}] AgentFlow {layers * width}-step DAG, fan-out {width}, 1 worker")
        assert self.state is not None
        self.set_workers("agentflow", 1)
        token = (self.home / stack.KEY_FILE).read_text().strip()
        runs = await planners.fanout_runs(
            self.state.api_url,
            self.nats_url,
            token,
            layers=layers,
            width=width,
            runs=args.fanout_runs,
            seconds=self.wait_seconds(),
        )
        for metric, value in planners.fanout_figures(runs, layers, width).items():
            self.record(f"{PLANNER}fanout", metric, value)

    async def peer_phases(self, index: int, peer: peers.Peer) -> None:
        """A peer's rows, measured exactly like AgentFlow's noop rows."""
        args = self.args
        for count in (1, 2):
            _progress(f"[{index + 1}/{args.repeat}] {peer.system}, {count} worker(s)")
            self.set_workers(peer.system, 0)
            await peer.reset()
            self.set_workers(peer.system, count, peer=peer)
            if count == 1:
                await peer.round_trips(20)
                self.latency(peer.system, await peer.round_trips(args.latency_runs))
            work = functools.partial(peer.sustained, args.tasks)
            rate = await self.measured(peer.system, args.tasks, work, parts=peer.parts())
            self.record(peer.system, f"tasks_per_s_{count}w", rate)
        for count in (1, 2):
            _progress(f"[{index + 1}/{args.repeat}] {peer.system}, drain with {count} worker(s)")
            self.set_workers(peer.system, 0)
            await peer.reset()
            submit = functools.partial(peer.submit, args.tasks)
            await self.drained(peer.system, count, submit, peer.completions, peer=peer)
        self.set_workers(peer.system, 0)

    def sandboxes(self) -> list[tuple[str, str, int, str]]:
        """(row, backend, warm pool size, tool) of the sandboxed phases: gVisor rows only where runsc is
        installed."""
        if not self.args.sandbox_tasks:
            return []
        chosen = [("process-sandbox", "process", 0, "bench-echo")]
        if self.args.sandbox in (None, "runsc") and shutil.which("runsc"):
            chosen += [
                ("runsc-cold", "runsc", 0, "bench-echo"),
                ("runsc-warm", "runsc", 4, "bench-echo"),
                ("runsc-warm-exec", "runsc", 4, "bench-echo-exec"),
                ("runsc-reuse", "runsc", 4, "bench-echo-reuse"),
            ]
        return chosen

    async def run(self) -> dict[str, Any]:
        assert self.state is not None
        token = (self.home / stack.KEY_FILE).read_text().strip()
        await _register_echo(self.state.api_url, token)
        await _apply_three_step(self.state.api_url, token)
        if self.agents_on():
            await agent_turns.register(self.state.api_url, token)
        if self.gateway_on():
            self.gateway_targets = await self._gateway_targets(token)
        for peer in self.peers:
            await peer.open()
        try:
            for index in range(self.args.repeat):
                await self.repetition(index)
        finally:
            for peer in self.peers:
                await peer.close()
        return self.report()

    async def _gateway_targets(self, token: str) -> list[gateway.Target]:
        """A tenant of the benchmark's own with the upstream's deployment; LiteLLM's proxy with ``--peers``."""
        assert self.state is not None
        upstream = self.gateway_servers.upstream
        litellm = self.gateway_servers.start_litellm() if self.args.peers else None
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=self.state.api_url, headers=headers, timeout=30) as admin:
            made = await admin.post("/v1/tenants", json={"name": "bench-gateway"})
            made.raise_for_status()
            key = made.json()["admin_key"]["key"]
            applied = await admin.post(
                "/v1/models", json=gateway.deployment(upstream), headers={"Authorization": f"Bearer {key}"}
            )
            applied.raise_for_status()
        return gateway.targets(self.state.api_url, key, upstream, litellm)

    def report(self) -> dict[str, Any]:
        medians = {
            system: {metric: median(values) for metric, values in metrics.items()}
            for system, metrics in self.samples.items()
        }
        summary: dict[str, Any] = {k: v for k, v in medians.items() if not k.startswith((PLANNER, AGENT))}
        summary["ratios"] = {}
        for other in ("raw", *(peer.system for peer in self.peers)):
            # A 3-step row is compared with AgentFlow's 3-step workflow, every other with its noop row.
            mine = "agentflow-3step" if other.endswith("-3step") else "agentflow"
            if mine in summary and other in summary:
                summary["ratios"].update(_ratios(summary[mine], summary[other], other))
        if "agentflow-3step" in summary and "raw" in summary:
            three_step = summary["agentflow-3step"]["p50_ms"] / summary["raw"]["p50_ms"]
            summary["ratios"]["p50_latency_agentflow_3step_to_raw"] = three_step
        summary["gateway_overhead"] = gateway.overheads(summary)
        agents = {k.removeprefix(AGENT): v for k, v in medians.items() if k.startswith(AGENT)}
        if agents:
            summary["agents"] = agents
        planned = {k.removeprefix(PLANNER): v for k, v in medians.items() if k.startswith(PLANNER)}
        if planned:
            summary["planners"] = planned
        summary["runs"] = {"repeat": self.args.repeat, "latency_runs": self.args.latency_runs, "tasks": self.args.tasks}
        summary["runs"]["task_phases"] = self.args.only is None
        summary["runs"]["control_planes"] = self.args.control_planes
        summary["runs"]["nats_nodes"] = self.args.nats_cluster
        summary["runs"]["gateway_calls"] = self.args.gateway_calls if self.gateway_on() else 0
        if self.args.planners:
            summary["runs"]["planner_nodes"] = self.args.planner_nodes
            summary["runs"]["fanout"] = {
                "layers": self.args.fanout_layers,
                "width": self.args.fanout_width,
                "runs": self.args.fanout_runs,
                "workers": 1,
            }
        if self.peers:
            summary["runs"]["peer_versions"] = peers.versions()
        summary["samples"] = self.samples
        return summary


def _group(part: str) -> str:
    """The figure a process's CPU counts in: its workers', its NATS nodes' or its control planes' together."""
    for prefix, group in (("worker-", "workers"), ("nats-node-", "nats-server"), ("control-plane", "control-plane")):
        if part.startswith(prefix):
            return group
    return part


def _ratios(af: dict[str, float], other: dict[str, float], name: str) -> dict[str, float]:
    """AgentFlow's figures over another row's: below 1 is faster for latency, above 1 is faster for rates."""
    pairs = {"p50_latency": "p50_ms", "sustained_1w": "tasks_per_s_1w", "sustained_2w": "tasks_per_s_2w"}
    pairs |= {"drain_1w": "drain_per_s_1w", "drain_2w": "drain_per_s_2w"}
    return {
        f"{label}_agentflow_to_{name}": af[metric] / other[metric]
        for label, metric in pairs.items()
        if metric in af and metric in other and other[metric]
    }


def _descendants(root: int) -> list[int]:
    """PIDs of every live descendant of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, frontier = [], [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.append(child)
            frontier.append(child)
    return found


def _stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a worker by PID, then any child it left behind (a prefork pool's, a supervisor's), each by PID."""
    children = _descendants(process.pid)
    stop(process.pid, timeout=15)
    process.wait()
    for pid in children:
        if alive(pid):
            stop(pid, timeout=5)


async def _raw_submit(client: raw.RawClient, count: int) -> None:
    for start in range(0, count, 256):
        await asyncio.gather(*(client._publish() for _ in range(min(256, count - start))))


async def _raw_completions(client: raw.RawClient, count: int, seconds: float) -> list[float]:
    deadline = time.monotonic() + seconds
    finished: list[float] = []
    while len(finished) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"raw JetStream: {len(finished)} of {count} results in {seconds:.0f} s")
        msgs = await raw._fetch(client._results, 512, 1.0)
        now = time.perf_counter()
        for msg in msgs:
            await msg.ack()
        finished += [now] * len(msgs)
    return finished


async def _agentflow_submit(af: AgentFlowClient, count: int, batch: int = 250) -> list[str]:
    http = await af._connection()
    run_ids: list[str] = []
    try:
        for start in range(0, count, batch):
            run_ids.extend(await af.submit_batch(http, min(batch, count - start)))
    finally:
        await http.close()
    return run_ids


async def _agentflow_completions(af: AgentFlowClient, run_ids: list[str], seconds: float) -> list[float]:
    finished = af._completions.finished
    deadline = time.monotonic() + seconds
    waiting = set(run_ids)
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"AgentFlow: {len(run_ids) - len(waiting)} of {len(run_ids)} runs in {seconds:.0f} s")
        await asyncio.sleep(0.005)
        waiting = {run_id for run_id in waiting if run_id not in finished}
    af._check_failures()
    return sorted(finished[run_id] for run_id in run_ids)


async def _post_setup(api_url: str, token: str, path: str, body: bytes, what: str) -> None:
    from urllib.parse import urlsplit

    from bench.http import LeanHTTP

    parts = urlsplit(api_url)
    http = LeanHTTP(parts.hostname or "127.0.0.1", parts.port or 80, token)
    await http.connect()
    status, answer = await http.post(path, body)
    await http.close()
    if status not in (200, 201):
        raise RuntimeError(f"{what} answered {status}: {answer!r}")


async def _register_echo(api_url: str, token: str) -> None:
    for name, runtime in ECHO_TOOLS.items():
        tool = {"name": name, "version": "1", "runtime": {"command": ECHO_COMMAND, **runtime}}
        await _post_setup(api_url, token, "/v1/tools", msgspec.json.encode(tool), f"registering {name}")


async def _apply_three_step(api_url: str, token: str) -> None:
    """The 3-step workflow of the ``agentflow-3step`` rows: a DAG of three ``noop`` steps, one after another."""
    name = THREE_STEP.partition("@")[0]
    doc = msgspec.json.encode(planners.layered_dag(3, 1, tool="noop", name=name))
    await _post_setup(api_url, token, "/v1/workflows", doc, "applying the 3-step workflow")


ROWS = (
    ("raw JetStream (nats-py)", "raw"),
    ("AgentFlow, noop, durable path", "agentflow"),
    ("AgentFlow, 3-step DAG of noop", "agentflow-3step"),
    ("Celery, prefork, Redis", "celery"),
    ("taskiq, taskiq-nats JetStream", "taskiq"),
    ("DBOS, 1-step workflow, PostgreSQL", "dbos"),
    ("DBOS, 3-step workflow", "dbos-3step"),
    ("Restate, 1-step service handler", "restate"),
    ("Restate, 3-step workflow", "restate-3step"),
    ("AgentFlow, process sandbox", "process-sandbox"),
    ("AgentFlow, gVisor (runsc) cold", "runsc-cold"),
    ("AgentFlow, gVisor warm, prestarted", "runsc-warm"),
    ("AgentFlow, gVisor warm, exec at call", "runsc-warm-exec"),
    ("AgentFlow, gVisor reused sandbox", "runsc-reuse"),
)
GVISOR_ROWS = ("runsc-cold", "runsc-warm", "runsc-warm-exec", "runsc-reuse")
PEER_NAMES = {
    "celery": "Celery",
    "taskiq": "taskiq",
    "dbos": "DBOS",
    "restate": "Restate",
    "dbos-3step": "DBOS 3-step",
    "restate-3step": "Restate 3-step",
}
AGENT = "agent:"
"""The prefix of the agents phase's systems in ``Bench.samples``; the report nests them under ``agents``."""
PLANNER = "planner:"
"""The prefix of the planner phases' systems in ``Bench.samples``; the report nests them under ``planners``."""


def _rate(m: dict[str, float], key: str, width: int) -> str:
    return f"{m[key]:>{width}.0f}" if key in m else f"{'-':>{width}}"


def render(summary: dict[str, Any]) -> str:
    lines = _render_tasks(summary) if summary["runs"].get("task_phases", True) else []
    lines += gateway.render(summary)
    lines += agent_turns.render(summary.get("agents", {}))
    if "local-model" in summary:
        speed = summary["local-model"]
        lines += [
            "",
            f"local model (SmolLM2-135M-Instruct, llama.cpp) through the gateway: {speed['tokens_per_second']:.1f}"
            f" tokens/s, first token in {speed['ttft_ms']:.0f} ms ({speed['tokens']:.0f}-token answers)",
        ]
    if "planners" in summary:
        runs = summary["runs"]
        if lines:
            lines.append("")
        lines += [
            f"Planners: median of {runs['repeat']} runs; µs per decide call over a whole run replayed result by"
            " result (no servers); parse ms: parse_workflow, the planner's share of applying the document",
            "",
            *planners.render(summary["planners"]),
        ]
    return "\n".join(lines)


def _topology(runs: dict[str, Any]) -> str:
    planes, nodes = runs.get("control_planes", 1), runs.get("nats_nodes", 1)
    nats = "one NATS node" if nodes == 1 else f"a {nodes}-node NATS cluster (AgentFlow's streams at {nodes} replicas)"
    return f"{planes} control plane{'s' if planes > 1 else ''} (submits spread over them), {nats}"


def _render_tasks(summary: dict[str, Any]) -> list[str]:
    runs = summary["runs"]
    lines = [
        f"AgentFlow bench: median of {runs['repeat']} runs; latency over {runs['latency_runs']} tasks one at a time;"
        f" sustained and drain over {runs['tasks']} tasks",
        _topology(runs),
        "",
        f"{'system':<38}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'1 worker/s':>12}{'2 workers/s':>13}"
        f"{'drain 1w/s':>12}{'drain 2w/s':>12}",
    ]
    for label, key in ROWS:
        m = summary.get(key)
        if m is None:
            continue
        lines.append(
            f"{label:<38}{m['p50_ms']:>9.2f}{m['p95_ms']:>9.2f}{m['p99_ms']:>9.2f}"
            f"{m['tasks_per_s_1w']:>12.0f}{m['tasks_per_s_2w']:>13.0f}"
            f"{_rate(m, 'drain_per_s_1w', 12)}{_rate(m, 'drain_per_s_2w', 12)}"
        )
    r = summary["ratios"]
    if "p50_latency_agentflow_to_raw" in r:  # the noop rows ran
        lines += _render_ratios(r, summary)
    if "process-sandbox" in summary and any(key in summary for key in GVISOR_ROWS):
        lines += _render_gvisor(summary)
    lines += [
        "",
        "CPU us per task in the sustained phases (all processes of each part):",
    ]
    for label, key in ROWS:
        m = summary.get(key)
        if m is None:
            continue
        cpu = {k.split(":", 1)[1]: v for k, v in m.items() if k.startswith("cpu_us:")}
        lines.append(f"  {label:<38}" + "  ".join(f"{name} {value:.0f}" for name, value in sorted(cpu.items())))
    return lines


def _render_gvisor(summary: dict[str, Any]) -> list[str]:
    """Each gVisor row beside the process sandbox: its p50 overhead per call, the workers' CPU per call in the
    sustained phases (sandboxes included: a warm pool's refills, a reused sandbox's wipes), and its rates."""
    base = summary["process-sandbox"]
    lines = [
        "",
        "gVisor per call, beside the process sandbox (overhead: p50 latency over it; CPU: the workers' per call in"
        " the sustained phases, sandboxes and pool refills included, and over the process sandbox's):",
    ]
    for key in ("process-sandbox", *GVISOR_ROWS):
        m = summary.get(key)
        if m is None:
            continue
        overhead = "" if key == "process-sandbox" else f"overhead {m['p50_ms'] - base['p50_ms']:6.1f} ms"
        cpu, base_cpu = m.get("cpu_us:workers", 0.0) / 1000, base.get("cpu_us:workers", 0.0) / 1000
        excess = "" if key == "process-sandbox" else f" (+{cpu - base_cpu:.1f})"
        lines.append(
            f"  {key:<16}{overhead:<22}CPU {cpu:6.1f} ms{excess:<10}"
            f"  sustained {m['tasks_per_s_1w']:.1f} calls/s with 1 worker, {m['tasks_per_s_2w']:.1f} with 2"
        )
    return lines


def _render_ratios(r: dict[str, float], summary: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"AgentFlow / raw JetStream: p50 latency {r['p50_latency_agentflow_to_raw']:.2f}x (target <= 2.5x); "
        f"sustained {r['sustained_1w_agentflow_to_raw']:.2f}x with 1 worker, "
        f"{r['sustained_2w_agentflow_to_raw']:.2f}x with 2 workers (target >= 0.8x)",
    ]
    if "p50_latency_agentflow_3step_to_raw" in r:
        lines.append(
            f"AgentFlow 3-step workflow / raw JetStream round trip: p50 latency "
            f"{r['p50_latency_agentflow_3step_to_raw']:.2f}x (target <= 6x)"
        )
    for key, name in (("raw", "raw JetStream"), *PEER_NAMES.items()):
        if f"drain_1w_agentflow_to_{key}" not in r:
            continue
        mine = "AgentFlow 3-step" if key.endswith("-3step") else "AgentFlow"
        line = f"{mine} / {name}: "
        if key != "raw":
            line += (
                f"p50 latency {r[f'p50_latency_agentflow_to_{key}']:.2f}x; sustained "
                f"{r[f'sustained_1w_agentflow_to_{key}']:.2f}x with 1 worker, "
                f"{r[f'sustained_2w_agentflow_to_{key}']:.2f}x with 2; "
            )
        line += (
            f"drain {r[f'drain_1w_agentflow_to_{key}']:.2f}x with 1 worker, "
            f"{r[f'drain_2w_agentflow_to_{key}']:.2f}x with 2"
        )
        lines.append(line)
    if any(key in summary for key in PEER_NAMES):
        lines.append("(latency ratios below 1 and rate ratios above 1 mean AgentFlow is faster)")
    return lines


def arguments() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="af bench",
        description="Run the benchmarks: AgentFlow's durable path beside raw JetStream (and with --peers, Celery and "
        "taskiq), the sandboxes and the planners, on this machine; the report goes to --json-file.",
    )
    parser.add_argument(
        "--repeat", metavar="N", type=int, default=3, help="Repetitions; figures are their median (default 3)."
    )
    parser.add_argument(
        "--latency-runs", metavar="N", type=int, default=300, help="Tasks one at a time per repetition."
    )
    parser.add_argument(
        "--tasks", metavar="N", type=int, default=3000, help="Tasks per sustained or drain phase (default 3000)."
    )
    parser.add_argument(
        "--sandbox-tasks", metavar="N", type=int, default=200, help="Sandboxed tasks per phase; 0 skips them."
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="Also run the noop task through Celery (Redis) and taskiq (NATS JetStream), and 1- and 3-step workflows "
        "through DBOS and Restate; `make bench-peers`.",
    )
    parser.add_argument(
        "--planners",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="End each repetition with the planners' phases: µs per decision of each planner, a fan-out DAG end to "
        "end.",
    )
    parser.add_argument(
        "--only",
        choices=["planners", "gateway", "agents"],
        help="Run only these phases (`--only planners`, `--only gateway`, `--only agents`).",
    )
    parser.add_argument(
        "--agent-runs",
        type=int,
        default=100,
        help="Runs of each agent one at a time in the agents phase (mock model, noop tool); 0 skips it.",
    )
    parser.add_argument(
        "--local-model",
        action="store_true",
        help="Start the stack's local model too and measure its tokens/s through the gateway.",
    )
    parser.add_argument(
        "--gateway-calls",
        type=int,
        default=1000,
        help="Timed model calls per gateway cell (whole or streamed, 1 or 50 callers); 0 skips the gateway phase."
        " With --peers, LiteLLM's proxy from .venv-litellm runs beside AgentFlow's.",
    )
    parser.add_argument(
        "--sandbox",
        choices=["process", "runsc"],
        help="Run only the sandboxed phases: the process sandbox, and with runsc its cold, warm (prestarted or"
        " not) and reused rows too.",
    )
    parser.add_argument(
        "--planner-nodes", metavar="N", type=int, default=1000, help="Nodes of each planner's workflow."
    )
    parser.add_argument(
        "--fanout-layers", metavar="N", type=int, default=10, help="Layers of the end-to-end DAG (default 10)."
    )
    parser.add_argument(
        "--fanout-width", metavar="N", type=int, default=10, help="Steps per layer of the end-to-end DAG."
    )
    parser.add_argument(
        "--fanout-runs", metavar="N", type=int, default=5, help="Timed end-to-end DAG runs per repetition; 0 skips."
    )
    parser.add_argument(
        "--control-planes",
        metavar="N",
        type=int,
        choices=[1, 2, 3],
        default=1,
        help="Control planes on the same servers (default 1); AgentFlow's submits are spread over all of them.",
    )
    parser.add_argument(
        "--nats-cluster",
        metavar="N",
        type=int,
        choices=[1, 3],
        default=1,
        help="NATS nodes (default 1); with 3, AgentFlow's streams are kept at three replicas.",
    )
    parser.add_argument(
        "-o", "--output", choices=["table", "json"], default="table", help="How to print the report (default table)."
    )
    parser.add_argument(
        "--json-file", metavar="FILE", default="bench/results/latest.json", help="Where to write the JSON report."
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = arguments()
    args = parser.parse_args(argv)
    if args.sandbox is not None:
        args.planners = False
        if not args.sandbox_tasks:
            parser.error("--sandbox with --sandbox-tasks 0 leaves nothing to run")
    if args.only == "planners" and not args.planners:
        parser.error("--only planners and --no-planners leave nothing to run")
    if args.planners and (args.planner_nodes < 20 or args.planner_nodes % 10):
        parser.error("--planner-nodes must be a multiple of 10, at least 20 (the DAG has layers of 10)")
    bench = Bench(args)
    try:
        bench.start()
        summary = uvloop.run(bench.run())
    except peers.PeerMissing as error:
        sys.exit(f"af bench: {error}")
    finally:
        bench.stop()
    Path(args.json_file).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_file).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2) if args.output == "json" else render(summary))


if __name__ == "__main__":
    main()
