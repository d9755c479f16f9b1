"""Benchmark peer: Celery with a Redis broker and result backend, running the same noop task as AgentFlow.

``python -m bench.celery_peer --redis-url URL`` is one Celery worker: a prefork pool of one child, ``-O fair``,
no gossip, mingle, heartbeats or events. One such worker per AgentFlow worker was the fastest layout on two
cores (one worker with two children drained slower, and slower still without ``-O fair``); the prefetch
multiplier made no clear difference between 1 and 64. :class:`CeleryClient` submits with ``send_task`` and
waits through the Redis backend's pub/sub, Celery's own way; it is synchronous, so :class:`CeleryPeer` runs it
on a thread of its own. redis-server runs on a free loopback port without persistence (its fastest).
"""

import argparse
import asyncio
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from celery import Celery
from celery.result import ResultSet
from celery.signals import worker_ready

from bench.peers import READY, PeerMissing
from control_plane.stack.processes import free_port, spawn, stop, tcp_open, wait_until

TASK = "bench.noop"
PREFETCH_MULTIPLIER = 16
RESULT_EXPIRES_SECONDS = 600

T = TypeVar("T")


def make_app(redis_url: str) -> Any:
    """The Celery app of both sides: JSON, results in Redis for ten minutes, no task events."""
    app = Celery("af_bench_peer", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=RESULT_EXPIRES_SECONDS,
        worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
        worker_send_task_events=False,
        task_send_sent_event=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK)(noop)
    return app


def noop(item: dict[str, Any]) -> dict[str, Any]:
    """AgentFlow's ``noop`` tool: the input back as the output."""
    return item


class CeleryClient:
    """The submitting side, synchronous like Celery's client. One thread at a time."""

    def __init__(self, redis_url: str, timeout: float) -> None:
        self._app = make_app(redis_url)
        self._timeout = timeout
        self._counter = 0

    def _send(self) -> Any:
        self._counter += 1
        return self._app.send_task(TASK, args=({"i": self._counter},))

    def round_trips(self, count: int) -> list[float]:
        """Seconds per task, one task at a time: send, then ``get`` its result."""
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            self._send().get(timeout=self._timeout)
            samples.append(time.perf_counter() - started)
        return samples

    def submit(self, count: int) -> Any:
        return ResultSet([self._send() for _ in range(count)], app=self._app)

    def completions(self, results: Any) -> list[float]:
        """When each result arrived, in arrival order (``join_native`` yields them as they come)."""
        seen: list[float] = []
        results.join_native(timeout=self._timeout, callback=lambda _id, _value: seen.append(time.perf_counter()))
        return seen

    def sustained(self, count: int) -> float:
        """Tasks per second: send every task, then wait for every result."""
        started = time.perf_counter()
        finished = self.completions(self.submit(count))
        return count / (finished[-1] - started)

    def purge(self) -> None:
        self._app.control.purge()

    def close(self) -> None:
        self._app.close()


@dataclass(frozen=True, slots=True)
class RedisServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(data_dir: Path, log: Path, timeout: float = 20.0) -> RedisServer:
    """redis-server on a free loopback port, its files under ``data_dir``, no snapshots and no AOF."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise PeerMissing("redis-server not found: run `make bench-peers` (it installs Debian's redis-server)")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    process = spawn("redis-server", argv, log)
    wait_until("redis-server", lambda: tcp_open(port), timeout=timeout, process=process, log=log)
    return RedisServer(process, port)


class CeleryPeer:
    system = "celery"

    def __init__(self, home: Path, timeout: float) -> None:
        self._redis = start_redis(home / "redis", home / "logs" / "redis.log")
        self._client = CeleryClient(self._redis.url, timeout)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-client")

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def parts(self) -> dict[str, int]:
        return {"redis-server": self._redis.process.pid}

    def worker_command(self, index: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.celery_peer", "--redis-url", self._redis.url, "--name", f"bench-{index}"]
        return argv, {}

    async def open(self) -> None:
        pass

    async def reset(self) -> None:
        await self._call(self._client.purge)

    async def round_trips(self, count: int) -> list[float]:
        return await self._call(self._client.round_trips, count)

    async def sustained(self, count: int) -> float:
        return await self._call(self._client.sustained, count)

    async def submit(self, count: int) -> Any:
        return await self._call(self._client.submit, count)

    async def completions(self, submitted: Any) -> list[float]:
        return await self._call(self._client.completions, submitted)

    async def close(self) -> None:
        await self._call(self._client.close)
        self._thread.shutdown()

    def stop(self) -> None:
        self._thread.shutdown(wait=False)
        stop(self._redis.process.pid, timeout=10)
        self._redis.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A Celery worker of the benchmark (prefork pool).")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--concurrency", type=int, default=1, help="prefork child processes (default 1)")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--prefetch-multiplier", type=int, default=PREFETCH_MULTIPLIER)
    parser.add_argument("--optimization", choices=["fair", "default"], default="fair", help="Celery's -O")
    args = parser.parse_args()
    app = make_app(args.redis_url)
    worker_ready.connect(lambda **_: print(READY, flush=True), weak=False)
    app.worker_main(
        [
            "worker",
            "--pool=prefork",
            f"--concurrency={args.concurrency}",
            f"-O{args.optimization}",
            f"--prefetch-multiplier={args.prefetch_multiplier}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
            f"--hostname={args.name}@%h",
        ]
    )


if __name__ == "__main__":
    main()
