"""``af bench`` / ``make bench``: the durable path beside raw JetStream, in one run on this machine.

Every repetition measures, in turn: raw JetStream (nats-py) with 1 and 2 worker processes, AgentFlow's
durable path with the built-in ``noop`` tool (no sandbox: the platform itself) with 1 and 2 workers,
and AgentFlow with a tool in the process sandbox and in gVisor (runsc, cold and from the warm pool).
Reported: per-task latency one at a time (p50/p95/p99,
HTTP submit included for AgentFlow), sustained tasks/s, CPU per task by process, the median of the
repetitions, and AgentFlow's ratios to raw JetStream.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from bench import raw
from bench.agentflow_path import AgentFlowClient
from bench.stats import median, percentile, self_cpu_seconds, tree_cpu_seconds
from control_plane import stack
from control_plane.embedded.processes import spawn, stop

ECHO_TOOL = b"""{"name": "bench-echo", "version": "1", "runtime": {"command": ["python3", "-c",
 "import sys; sys.stdout.write(sys.stdin.read())"]}}"""


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.home = Path(tempfile.mkdtemp(prefix="af-bench-"))
        self.home.chmod(0o755)
        self.state: stack.StackState | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.samples: dict[str, dict[str, list[float]]] = {}

    # --- processes ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.state = stack.up(self.home, workers=0, concurrency=1)

    def stop(self) -> None:
        self.set_workers(None, 0)
        stack.down(self.home, quiet=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def set_workers(
        self, kind: str | None, count: int, concurrency: int = 64, sandbox: str = "process", warm: int = 0
    ) -> None:
        for process in self.workers:
            stop(process.pid, timeout=15)
            process.wait()
        self.workers = []
        assert self.state is not None
        for index in range(count):
            log = self.home / "logs" / f"bench-{kind}-{index}.log"
            if kind == "raw":
                argv = [sys.executable, "-m", "bench.raw", "--nats-url", self.state.nats_url]
                argv += ["--concurrency", str(concurrency)]
            else:
                argv = [sys.executable, "-m", "worker", "start", "--concurrency", str(concurrency)]
                argv += ["--nats-url", self.state.nats_url, "--worker-id", f"bench-{index}", "--sandbox", sandbox]
            env = {**os.environ, "AF_RUNSC_WARM": str(warm)}
            self.workers.append(spawn(f"{kind} worker", argv, log, env=env))
        time.sleep(0.8)

    def _parts(self) -> dict[str, int]:
        assert self.state is not None
        parts = {p.name: p.pid for p in self.state.parts}
        found = {"nats-server": parts["nats-server"], "control-plane": parts["control-plane"]}
        if "postgres" in parts:
            found["postgres"] = parts["postgres"]
        return found

    # --- measurements -------------------------------------------------------------------------------

    def record(self, system: str, metric: str, value: float) -> None:
        self.samples.setdefault(system, {}).setdefault(metric, []).append(value)

    async def measured(self, system: str, tasks: int, work: Callable[[], Awaitable[float]]) -> float:
        """Run ``work`` (a sustained phase) and record CPU µs per task of each process tree."""
        pids = {**self._parts(), **{f"worker-{i}": w.pid for i, w in enumerate(self.workers)}}
        before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
        client_before = self_cpu_seconds()
        rate = await work()
        for name, pid in pids.items():
            key = "workers" if name.startswith("worker") else name
            used = (tree_cpu_seconds(pid) - before[name]) * 1e6 / tasks
            self.samples.setdefault(system, {}).setdefault(f"cpu_us:{key}", [])
            self._add_cpu(system, key, used)
        self._add_cpu(system, "client", (self_cpu_seconds() - client_before) * 1e6 / tasks)
        return rate

    def _add_cpu(self, system: str, key: str, value: float) -> None:
        values = self.samples[system].setdefault(f"cpu_us:{key}", [])
        # Several worker processes of one repetition add up into one figure per repetition.
        if key == "workers" and len(values) > self._repetition:
            values[-1] += value
        else:
            values.append(value)

    def latency(self, system: str, samples: list[float]) -> None:
        for q in (50, 95, 99):
            self.record(system, f"p{q}_ms", percentile(samples, q) * 1000)

    async def repetition(self, index: int) -> None:
        self._repetition = index
        args = self.args
        assert self.state is not None
        token = (self.home / stack.KEY_FILE).read_text().strip()

        for count in (1, 2):
            _progress(f"[{index + 1}/{args.repeat}] raw JetStream, {count} worker(s)")
            self.set_workers("raw", count)
            async with raw.RawClient(self.state.nats_url) as client:
                await raw.reset_streams(client._js)
                self.set_workers("raw", count)
                if count == 1:
                    await client.round_trips(20)
                    self.latency("raw", await client.round_trips(args.latency_runs))
                rate = await self.measured("raw", args.tasks, lambda: client.sustained(args.tasks))
                self.record("raw", f"tasks_per_s_{count}w", rate)

        for count in (1, 2):
            _progress(f"[{index + 1}/{args.repeat}] AgentFlow noop, {count} worker(s)")
            self.set_workers("agentflow", count)
            async with AgentFlowClient(self.state.api_url, self.state.nats_url, token, "noop") as af:
                if count == 1:
                    await af.round_trips(20)
                    self.latency("agentflow", await af.round_trips(args.latency_runs))
                rate = await self.measured("agentflow", args.tasks, lambda: af.sustained(args.tasks))
                self.record("agentflow", f"tasks_per_s_{count}w", rate)

        for system, sandbox, warm in self.sandboxes():
            for count in (1, 2):
                _progress(f"[{index + 1}/{args.repeat}] AgentFlow {system}, {count} worker(s)")
                self.set_workers("agentflow", count, concurrency=4, sandbox=sandbox, warm=warm)
                async with AgentFlowClient(self.state.api_url, self.state.nats_url, token, "bench-echo") as af:
                    if count == 1:
                        self.latency(system, await af.round_trips(max(10, args.latency_runs // 10)))
                    rate = await self.measured(
                        system, args.sandbox_tasks, lambda: af.sustained(args.sandbox_tasks, batch=50)
                    )
                    self.record(system, f"tasks_per_s_{count}w", rate)

    def sandboxes(self) -> list[tuple[str, str, int]]:
        """(row, backend, warm pool size) of the sandboxed phases: gVisor rows only where runsc is installed."""
        if not self.args.sandbox_tasks:
            return []
        chosen = [("process-sandbox", "process", 0)]
        if shutil.which("runsc"):
            chosen += [("runsc-cold", "runsc", 0), ("runsc-warm", "runsc", 4)]
        return chosen

    async def run(self) -> dict[str, Any]:
        assert self.state is not None
        token = (self.home / stack.KEY_FILE).read_text().strip()
        await _register_echo(self.state.api_url, token)
        for index in range(self.args.repeat):
            await self.repetition(index)
        return self.report()

    def report(self) -> dict[str, Any]:
        summary: dict[str, Any] = {
            system: {metric: median(values) for metric, values in metrics.items()}
            for system, metrics in self.samples.items()
        }
        raw_, af = summary["raw"], summary["agentflow"]
        summary["ratios"] = {
            "p50_latency_agentflow_to_raw": af["p50_ms"] / raw_["p50_ms"],
            "sustained_1w_agentflow_to_raw": af["tasks_per_s_1w"] / raw_["tasks_per_s_1w"],
            "sustained_2w_agentflow_to_raw": af["tasks_per_s_2w"] / raw_["tasks_per_s_2w"],
        }
        summary["runs"] = {"repeat": self.args.repeat, "latency_runs": self.args.latency_runs, "tasks": self.args.tasks}
        summary["samples"] = self.samples
        return summary


async def _register_echo(api_url: str, token: str) -> None:
    from urllib.parse import urlsplit

    from bench.http import LeanHTTP

    parts = urlsplit(api_url)
    http = LeanHTTP(parts.hostname or "127.0.0.1", parts.port or 80, token)
    await http.connect()
    status, body = await http.post("/v1/tools", ECHO_TOOL)
    await http.close()
    if status not in (200, 201):
        raise RuntimeError(f"registering the bench tool answered {status}: {body!r}")


def render(summary: dict[str, Any]) -> str:
    rows = [
        ("raw JetStream (nats-py)", "raw"),
        ("AgentFlow, noop, durable path", "agentflow"),
        ("AgentFlow, process sandbox", "process-sandbox"),
        ("AgentFlow, gVisor (runsc) cold", "runsc-cold"),
        ("AgentFlow, gVisor (runsc) warm pool", "runsc-warm"),
    ]
    runs = summary["runs"]
    lines = [
        f"AgentFlow bench: median of {runs['repeat']} runs; latency over {runs['latency_runs']} tasks one at a time;"
        f" sustained over {runs['tasks']} tasks",
        "",
        f"{'system':<38}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'1 worker/s':>12}{'2 workers/s':>13}",
    ]
    for label, key in rows:
        m = summary.get(key)
        if m is None:
            continue
        lines.append(
            f"{label:<38}{m['p50_ms']:>9.2f}{m['p95_ms']:>9.2f}{m['p99_ms']:>9.2f}"
            f"{m['tasks_per_s_1w']:>12.0f}{m['tasks_per_s_2w']:>13.0f}"
        )
    r = summary["ratios"]
    lines += [
        "",
        f"AgentFlow / raw JetStream: p50 latency {r['p50_latency_agentflow_to_raw']:.2f}x (target <= 2.5x); "
        f"sustained {r['sustained_1w_agentflow_to_raw']:.2f}x with 1 worker, "
        f"{r['sustained_2w_agentflow_to_raw']:.2f}x with 2 workers (target >= 0.8x)",
        "",
        "CPU us per task in the sustained phases (all processes of each part):",
    ]
    for label, key in rows:
        m = summary.get(key)
        if m is None:
            continue
        cpu = {k.split(":", 1)[1]: v for k, v in m.items() if k.startswith("cpu_us:")}
        lines.append(f"  {label:<38}" + "  ".join(f"{name} {value:.0f}" for name, value in sorted(cpu.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="af bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; figures are their median (default 3)")
    parser.add_argument("--latency-runs", type=int, default=300, help="tasks one at a time per repetition")
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per sustained phase (default 3000)")
    parser.add_argument("--sandbox-tasks", type=int, default=200, help="sandboxed tasks per phase; 0 skips them")
    parser.add_argument("--output", choices=["table", "json"], default="table")
    parser.add_argument("--json-file", default="bench/results/latest.json", help="where to write the JSON report")
    args = parser.parse_args(argv)
    bench = Bench(args)
    try:
        bench.start()
        summary = uvloop.run(bench.run())
    finally:
        bench.stop()
    Path(args.json_file).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_file).write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2) if args.output == "json" else render(summary))


if __name__ == "__main__":
    main()
