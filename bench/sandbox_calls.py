"""``python -m bench.sandbox_calls``: one sandbox backend's calls alone, without NATS, PostgreSQL or HTTP.

Calls one at a time through the process backend and through runsc, cold and from a warm pool, for a tool that
only copies stdin to stdout (``cat``) and for the same in Python, and prints the p50/p95/p99 of each call
and the p50 of its start (files, bundle, sandbox creation, handing the call over) and run (the tool's process)
as the backend measured them. ``--pause`` leaves time between warm calls for the pool to refill: without it,
calls one after another outrun the sandboxes' boots and wait for them.
"""

import argparse
import asyncio
import statistics
import time

from bench.stats import percentile
from sandbox import Backend, ProcessBackend, RunscBackend, SandboxCall

TOOLS = {"cat": ("cat",), "python": ("python3", "-c", "import sys; sys.stdout.write(sys.stdin.read())")}


async def _calls(backend: Backend, command: tuple[str, ...], count: int, pause: float) -> str:
    totals, starts, runs = [], [], []
    for index in range(count):
        await asyncio.sleep(pause)
        began = time.perf_counter()
        outcome = await backend.run(SandboxCall(call_id=f"bench-{index}", command=command, stdin=b'{"a": 1}'))
        totals.append(time.perf_counter() - began)
        if outcome.exit_code != 0:
            raise RuntimeError(f"{command[0]} failed in {outcome.kind}: {outcome.stderr_tail}")
        starts.append(outcome.start_seconds)
        runs.append(outcome.duration_seconds)
    figures = "  ".join(f"p{q} {percentile(totals, q) * 1000:6.1f}" for q in (50, 95, 99))
    return f"{figures}  start {statistics.median(starts) * 1000:6.1f}  run {statistics.median(runs) * 1000:6.1f} ms"


async def main(count: int, pause: float, warm: int) -> None:
    backends: list[tuple[str, Backend, float]] = [
        ("process", ProcessBackend(), 0.0),
        ("runsc-cold", RunscBackend(warm=0), 0.0),
        ("runsc-warm", RunscBackend(warm=warm), pause),
    ]
    try:
        for name, backend, wait in backends:
            if name == "runsc-warm":  # the first call starts the pool; give it the time to boot
                await backend.run(SandboxCall(call_id="bench-pool", command=TOOLS["cat"], stdin=b""))
                await asyncio.sleep(2)
            for tool, command in TOOLS.items():
                print(f"{name:<11} {tool:<7} {await _calls(backend, command, count, wait)}", flush=True)
    finally:
        for _, backend, _ in backends:
            await backend.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox_calls", description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per backend and tool")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between warm calls (the pool refills)")
    parser.add_argument("--warm", type=int, default=2, help="warm pool size")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.pause, args.warm))
