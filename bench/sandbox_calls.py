"""``python -m bench.sandbox_calls``: one sandbox backend's calls alone, without NATS, PostgreSQL or HTTP.

Calls through the process backend and through runsc (cold; from a warm pool with the tool started at the call
or prestarted; one sandbox reused across calls) for a tool that only copies stdin to stdout (``cat``) and for
the same in Python. First one at a time, ``--pause`` apart so that a warm pool refills between calls: the
p50/p95/p99 of each call and the p50 of its start (files, bundle, sandbox creation, handing the call over) and
run (the tool's process) as the backend measured them. Then sustained: ``--calls`` calls, ``--concurrency`` at
a time, with the calls/s and the CPU per call of this process and everything it started (the sandboxes, and a
warm pool's refills, included).
"""

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import replace

from bench.stats import percentile, tree_cpu_seconds
from sandbox import Backend, ProcessBackend, RunscBackend, SandboxCall

TOOLS = {"cat": ("cat",), "python": ("python3", "-c", "import sys; sys.stdout.write(sys.stdin.read())")}


def _call(index: int, command: tuple[str, ...], template: SandboxCall) -> SandboxCall:
    return replace(template, call_id=f"bench-{index}", command=command)


async def _one(backend: Backend, call: SandboxCall) -> tuple[float, float, float]:
    began = time.perf_counter()
    outcome = await backend.run(call)
    if outcome.exit_code != 0:
        raise RuntimeError(f"{call.command[0]} failed in {outcome.kind}: {outcome.stderr_tail}")
    return time.perf_counter() - began, outcome.start_seconds, outcome.duration_seconds


async def _latency(backend: Backend, command: tuple[str, ...], template: SandboxCall, count: int, pause: float) -> str:
    totals, starts, runs = [], [], []
    for index in range(count):
        await asyncio.sleep(pause)
        total, start, run = await _one(backend, _call(index, command, template))
        totals.append(total)
        starts.append(start)
        runs.append(run)
    figures = "  ".join(f"p{q} {percentile(totals, q) * 1000:6.1f}" for q in (50, 95, 99))
    return f"{figures}  start {statistics.median(starts) * 1000:6.1f}  run {statistics.median(runs) * 1000:6.1f} ms"


async def _sustained(
    backend: Backend, command: tuple[str, ...], template: SandboxCall, count: int, concurrency: int
) -> str:
    queue = list(range(count))

    async def caller() -> None:
        while queue:
            await _one(backend, _call(queue.pop(), command, template))

    cpu = tree_cpu_seconds(os.getpid(), reaped=True)
    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    cpu = tree_cpu_seconds(os.getpid(), reaped=True) - cpu
    return f"{count / elapsed:6.1f} calls/s  CPU {cpu / count * 1000:6.1f} ms/call"


async def main(count: int, pause: float, warm: int, concurrency: int) -> None:
    plain = SandboxCall(call_id="", command=(), stdin=b'{"a": 1}')
    rows: list[tuple[str, Backend, SandboxCall]] = [
        ("process", ProcessBackend(), plain),
        ("runsc-cold", RunscBackend(warm=0), plain),
        ("runsc-warm-exec", RunscBackend(warm=warm), plain),
        ("runsc-warm", RunscBackend(warm=warm), replace(plain, prestart=True)),
        ("runsc-reuse", RunscBackend(warm=warm), replace(plain, prestart=True, reuse=True)),
    ]
    try:
        for name, backend, template in rows:
            for tool, command in TOOLS.items():
                await _one(backend, _call(-1, command, template))  # the first call starts the pool
                await asyncio.sleep(2)
                latency = await _latency(backend, command, template, count, pause)
                sustained = await _sustained(backend, command, template, count, concurrency)
                print(f"{name:<16} {tool:<7} {latency}  {sustained}", flush=True)
    finally:
        for _, backend, _ in rows:
            await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_calls", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per backend and tool, in each phase")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between calls one at a time")
    parser.add_argument("--warm", type=int, default=2, help="warm pool size")
    parser.add_argument("--concurrency", type=int, default=4, help="calls at a time in the sustained phase")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.pause, args.warm, args.concurrency))
