"""The gateway phase of ``af bench``: what a model call costs on top of the model, beside LiteLLM's proxy.

One fast OpenAI-compatible upstream on loopback (``bench/upstream.py``, which answers at once) stands for the
model, so that the gateways are measured and not the model. The same chat completion is sent three ways —
straight to the upstream (``direct``), through AgentFlow's ``/v1/llm/chat/completions`` with a tenant's API
key (``agentflow``), and through LiteLLM's proxy on the same upstream (``litellm``, only with ``--peers``: it
lives in a virtualenv of its own, ``.venv-litellm``, never in AgentFlow's dependencies) — whole, and streamed
(time to first token), by 1 caller and by 50 concurrent callers, all from aiohttp, the leanest client at hand.
A gateway's overhead is its p50 minus the direct call's p50 in the same repetition.
"""

import asyncio
import functools
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.stats import percentile
from control_plane.stack.processes import free_port, http_ok, spawn, stop, tcp_open, wait_until

MODEL = "bench-fast"
UPSTREAM = "bench"
CALLERS = (1, 50)
LITELLM_VENV = Path(".venv-litellm")
LITELLM_CONFIG = """model_list:
  - model_name: {model}
    litellm_params:
      model: openai/remote-{model}
      api_base: {base}
      api_key: unused
litellm_settings:
  drop_params: true
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One way to reach the model: a row of the table."""

    system: str
    base: str
    """The OpenAI base URL (``…/v1``)."""
    model: str
    key: str


class Servers:
    """The upstream and, when asked for, LiteLLM's proxy: real processes on loopback, stopped by PID."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.processes: list[subprocess.Popen[bytes]] = []
        self.upstream = ""

    def start_upstream(self) -> str:
        port = free_port()
        log = self.home / "upstream.log"
        process = spawn("upstream", [sys.executable, "-m", "bench.upstream", "--port", str(port)], log)
        self.processes.append(process)
        wait_until("upstream", lambda: tcp_open(port), timeout=30, process=process, log=log)
        self.upstream = f"http://127.0.0.1:{port}"
        return self.upstream

    def start_litellm(self) -> tuple[str, str]:
        """LiteLLM's base URL and its master key."""
        binary = LITELLM_VENV / "bin" / "litellm"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is missing: `make bench-peers` installs LiteLLM's proxy there")
        config = self.home / "litellm.yaml"
        config.write_text(LITELLM_CONFIG.format(model=MODEL, base=f"{self.upstream}/u/{UPSTREAM}/v1"))
        port = free_port()
        log = self.home / "litellm.log"
        # One worker process, like AgentFlow's one control plane; no database, no master key: its leanest path.
        command = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        command += ["--num_workers", "1"]
        key = f"sk-{secrets.token_hex(16)}"
        environment = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        environment["LITELLM_MASTER_KEY"] = key
        process = spawn("litellm", command, log, env=environment)
        self.processes.append(process)
        wait_until(
            "litellm",
            lambda: http_ok(f"http://127.0.0.1:{port}/health/liveliness"),
            timeout=180,
            process=process,
            log=log,
        )
        return f"http://127.0.0.1:{port}/v1", key

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop(process.pid)
        self.processes.clear()


def targets(api_url: str, tenant_key: str, upstream: str, litellm: tuple[str, str] | None) -> list[Target]:
    chosen = [
        Target(system="direct", base=f"{upstream}/u/{UPSTREAM}/v1", model=f"remote-{MODEL}", key="unused"),
        Target(system="agentflow", base=f"{api_url}/v1/llm", model=MODEL, key=tenant_key),
    ]
    if litellm is not None:
        chosen.append(Target(system="litellm", base=litellm[0], model=MODEL, key=litellm[1]))
    return chosen


def deployment(upstream: str) -> dict[str, Any]:
    """The AgentFlow deployment of the benchmark's model: the upstream, tier1, no key."""
    return {
        "name": MODEL,
        "provider": "openai",
        "endpoint": f"{upstream}/u/{UPSTREAM}/v1",
        "model": f"remote-{MODEL}",
        "tier": "tier1",
    }


def _body(stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something short about durable workflows."}],
        "max_tokens": 16,
        "stream": stream,
    }


async def _whole(client: aiohttp.ClientSession, target: Target) -> float:
    started = time.perf_counter()
    async with client.post(f"{target.base}/chat/completions", json=_body(False) | {"model": target.model}) as answer:
        answer.raise_for_status()
        await answer.json()
    return time.perf_counter() - started


async def _first_token(client: aiohttp.ClientSession, target: Target) -> float:
    """Seconds until the first chunk with content; the rest of the stream is read, untimed."""
    started = time.perf_counter()
    first = 0.0
    async with client.post(f"{target.base}/chat/completions", json=_body(True) | {"model": target.model}) as answer:
        answer.raise_for_status()
        async for line in answer.content:
            if not first and line.startswith(b"data: ") and b'"content"' in line:
                first = time.perf_counter() - started
    if not first:
        raise RuntimeError(f"{target.system}: the stream sent no content")
    return first


async def _callers(call: Callable[[], Awaitable[float]], callers: int, calls: int) -> list[float]:
    """``calls`` timed calls shared by ``callers`` concurrent callers."""
    remaining = calls
    samples: list[float] = []

    async def caller() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            samples.append(await call())

    await asyncio.gather(*(caller() for _ in range(callers)))
    return samples


async def measure(target: Target, calls: int) -> dict[str, float]:
    """p50 and p99 (ms) of whole calls and of the streams' first token, by 1 and 50 callers."""
    figures: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {target.key}"}
    connector = aiohttp.TCPConnector(limit=max(CALLERS))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as client:
        for kind, call in (("whole", _whole), ("ttft", _first_token)):
            for callers in CALLERS:
                bound = functools.partial(call, client, target)
                await _callers(bound, callers, max(20, calls // 10))  # warm connections and caches
                samples = await _callers(bound, callers, calls)
                for q in (50, 99):
                    figures[f"{kind}_p{q}_ms_c{callers}"] = percentile(samples, q) * 1000
    return figures


def overheads(rows: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each gateway's p50 and p99 minus the direct call's, cell by cell."""
    direct = rows.get("gw-direct", {})
    result: dict[str, float] = {}
    for system in ("agentflow", "litellm"):
        row = rows.get(f"gw-{system}")
        if not row:
            continue
        for metric, value in row.items():
            if metric in direct:
                result[f"{system}_{metric}"] = value - direct[metric]
    return result


def render(rows: dict[str, dict[str, float]]) -> list[str]:
    if "gw-direct" not in rows:
        return []
    columns = [f"{kind}_p{q}_ms_c{c}" for kind in ("whole", "ttft") for c in CALLERS for q in (50, 99)]
    titles = [
        f"{'call' if kind == 'whole' else 'ttft'} p{q} c{c}"
        for kind in ("whole", "ttft")
        for c in CALLERS
        for q in (50, 99)
    ]
    lines = ["", "model gateway, one fast upstream on loopback (ms; c = concurrent callers)"]
    lines.append(f"{'system':<24}" + "".join(f"{t:>13}" for t in titles))
    for system in ("direct", "agentflow", "litellm"):
        row = rows.get(f"gw-{system}")
        if row:
            lines.append(f"{system:<24}" + "".join(f"{row.get(c, float('nan')):>13.2f}" for c in columns))
    extra = overheads(rows)
    for system in ("agentflow", "litellm"):
        cells = [extra.get(f"{system}_{c}") for c in columns]
        if any(cell is not None for cell in cells):
            lines.append(f"{system + ' overhead':<24}" + "".join(f"{(c or 0.0):>13.2f}" for c in cells))
    return lines
