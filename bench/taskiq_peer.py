"""Benchmark peer: taskiq on NATS JetStream (taskiq-nats), results in taskiq-nats' NATS object store backend.

taskiq-nats has no key-value result backend; its object store one keeps everything on the same nats-server.
``python -m taskiq worker bench.taskiq_peer:worker_broker --workers 1`` is one taskiq worker (a supervisor and
one worker process); the CLI imports the broker by name, so the NATS URL reaches it in ``AF_BENCH_TASKIQ_NATS_URL``.
Tuned: the task stream is a work queue on file storage like AgentFlow's, the client polls ``get_result`` every
millisecond with 16 results awaited at once, and the results bucket allows enough consumers (see
:meth:`TaskiqClient.open`). Workers pull one message per fetch, taskiq-nats' default: with a batch above one,
nats-py's fetch without a timeout did not return when a message arrived at an idle consumer, and with a timeout
an idle fetch raises a TimeoutError that taskiq-nats does not catch, which kills the worker process.
"""

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from taskiq import TaskiqEvents
from taskiq.exceptions import ResultGetError
from taskiq_nats import NATSObjectStoreResultBackend, PullBasedJetStreamBroker

from bench.peers import READY, PolledClient
from control_plane.stack import nats as embedded_nats
from control_plane.stack.processes import stop

NATS_URL_ENV = "AF_BENCH_TASKIQ_NATS_URL"
TASK = "bench.noop"
STREAM, SUBJECT, DURABLE = "BENCH_TASKIQ", "bench.taskiq", "bench-taskiq"
BUCKET = "bench_taskiq_results"
RESULTS_STREAM = f"OBJ_{BUCKET}"
MAX_RESULT_CONSUMERS = 1_000_000
FETCH_BATCH = 1
POLL_SECONDS = 0.001
WAITERS = 16
SUBMIT_AT_ONCE = 256


async def noop(item: dict[str, Any]) -> dict[str, Any]:
    """AgentFlow's ``noop`` tool: the input back as the output."""
    return item


def _build(nats_url: str) -> tuple[PullBasedJetStreamBroker, Any]:
    broker = PullBasedJetStreamBroker(
        servers=nats_url,
        subject=SUBJECT,
        stream_name=STREAM,
        durable=DURABLE,
        stream_config=StreamConfig(retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE),
        pull_consume_batch=FETCH_BATCH,
        pull_consume_timeout=None,
    ).with_result_backend(NATSObjectStoreResultBackend(servers=nats_url, bucket_name=BUCKET))
    task = broker.register_task(noop, task_name=TASK)
    return broker, task


def worker_broker() -> PullBasedJetStreamBroker:
    """The broker as taskiq's worker CLI loads it; prints :data:`READY` once its pull consumer is bound."""
    broker, _ = _build(os.environ[NATS_URL_ENV])
    announcing: set[asyncio.Task[None]] = set()

    async def announce() -> None:
        for _ in range(6000):  # startup connects, then binds the consumer; the bench waits 60 s at most
            if hasattr(broker, "consumer"):
                print(READY, flush=True)
                return
            await asyncio.sleep(0.01)

    def on_startup(_state: Any) -> None:
        task = asyncio.ensure_future(announce())
        announcing.add(task)
        task.add_done_callback(announcing.discard)

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, on_startup)
    return broker


class TaskiqClient(PolledClient):
    """The kicking side: kicks tasks and polls the result backend, as a taskiq client does."""

    submit_at_once = SUBMIT_AT_ONCE

    def __init__(self, nats_url: str, timeout: float, *, waiters: int = WAITERS) -> None:
        self._broker, self._task = _build(nats_url)
        self._timeout = timeout
        self.waiters = waiters
        self._counter = 0

    async def open(self) -> None:
        """Start the broker, then raise the results bucket's consumer limit.

        Every result read opens an ordered consumer on the bucket's stream, which lingers for seconds after;
        with the bucket as taskiq-nats creates it, nats-server refuses the 1,001st ("maximum consumers limit
        reached"), which at a few hundred reads per second happens within seconds.
        """
        await self._broker.startup()
        js = self._broker.client.jetstream()
        info = await js.stream_info(RESULTS_STREAM)
        if info.config.max_consumers != MAX_RESULT_CONSUMERS:
            info.config.max_consumers = MAX_RESULT_CONSUMERS
            await js.update_stream(info.config)

    async def close(self) -> None:
        await self._broker.shutdown()

    async def _start(self) -> Any:
        self._counter += 1
        return await self._task.kiq({"i": self._counter})

    async def _wait(self, kicked: Any) -> float:
        """Poll ``get_result`` until the result is there (``wait_result`` would read each result twice)."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                result = await kicked.get_result()
            except ResultGetError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no result for taskiq task {kicked.task_id} in {self._timeout} s") from None
                await asyncio.sleep(POLL_SECONDS)
                continue
            if result.is_err:
                raise RuntimeError(f"taskiq task {kicked.task_id} failed: {result.error}")
            return time.perf_counter()

    async def purge(self) -> None:
        js = self._broker.client.jetstream()
        for stream in (STREAM, RESULTS_STREAM):
            await js.purge_stream(stream)


class TaskiqPeer:
    system = "taskiq"

    def __init__(self, home: Path, timeout: float) -> None:
        self._server = embedded_nats.start(home / "taskiq-nats", home / "logs" / "taskiq-nats.log")
        self._client = TaskiqClient(self._server.url, timeout)

    def parts(self) -> dict[str, int]:
        return {"nats-server": self._server.process.pid}

    def worker_command(self, index: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "taskiq", "worker", "bench.taskiq_peer:worker_broker", "--workers", "1"]
        return [*argv, "--log-level", "WARNING"], {NATS_URL_ENV: self._server.url}

    async def open(self) -> None:
        await self._client.open()

    async def reset(self) -> None:
        await self._client.purge()

    async def round_trips(self, count: int) -> list[float]:
        return await self._client.round_trips(count)

    async def sustained(self, count: int) -> float:
        return await self._client.sustained(count)

    async def submit(self, count: int) -> Any:
        return await self._client.submit(count)

    async def completions(self, submitted: Any) -> list[float]:
        return await self._client.completions(submitted)

    async def close(self) -> None:
        await self._client.close()

    def stop(self) -> None:
        stop(self._server.process.pid, timeout=10)
        self._server.process.wait()
