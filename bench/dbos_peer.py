"""Benchmark peer: DBOS durable workflows on the bench stack's PostgreSQL server, in a database of their own.

``python -m bench.dbos_peer --database-url URL --steps N`` is one DBOS worker: it registers the two workflows
(``bench_noop``: one noop step; ``bench_three``: three noop steps one after another) and consumes the queue of
the ``N``-step one. The client enqueues through :class:`dbos.DBOSClient` (the way another process starts a
DBOS workflow) and waits with its handle's ``get_result``. DBOS checkpoints the workflow's input, each step's
output and the final status in its system database. Tuned: the workers poll their queue every
:data:`QUEUE_POLL_SECONDS` (DBOS's default is 1 s) and the client polls a result every :data:`RESULT_POLL_SECONDS`
with :data:`WAITERS` results awaited at once (as the taskiq peer does); the client's pool allows that many reads.
"""

import argparse
import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dbos import DBOS, DBOSClient, DBOSConfig, EnqueueOptions

from bench.peers import READY, PolledClient
from registry.db import dsn_with_database, ensure_database

DATABASE = "af_bench_dbos"
WORKFLOWS = {1: "bench_noop", 3: "bench_three"}
QUEUES = {1: "bench_noop", 3: "bench_three"}
QUEUE_POLL_SECONDS = 0.005
RESULT_POLL_SECONDS = 0.001
WORKER_CONCURRENCY = 64
WAITERS = 16
SUBMIT_AT_ONCE = 64


@DBOS.step()
def noop_step(item: dict[str, Any]) -> dict[str, Any]:
    """AgentFlow's ``noop`` tool: the input back as the output."""
    return item


@DBOS.workflow(name=WORKFLOWS[1])
def noop_workflow(item: dict[str, Any]) -> dict[str, Any]:
    return noop_step(item)


@DBOS.workflow(name=WORKFLOWS[3])
def three_step_workflow(item: dict[str, Any]) -> dict[str, Any]:
    for _ in range(3):
        item = noop_step(item)
    return item


class DBOSBenchClient(PolledClient):
    """The enqueuing side: :class:`DBOSClient` from outside the application, as a service calling DBOS does."""

    waiters = WAITERS
    submit_at_once = SUBMIT_AT_ONCE

    def __init__(self, url: str, steps: int, timeout: float) -> None:
        self._client = DBOSClient(system_database_url=url, system_database_pool_size=WAITERS + 4)
        self._options = EnqueueOptions(queue_name=QUEUES[steps], workflow_name=WORKFLOWS[steps])
        self._timeout = timeout
        self._counter = 0

    async def _start(self) -> Any:
        self._counter += 1
        return await self._client.enqueue_async(self._options, {"i": self._counter})

    async def _wait(self, handle: Any) -> float:
        await asyncio.wait_for(handle.get_result(polling_interval_sec=RESULT_POLL_SECONDS), self._timeout)
        return time.perf_counter()

    def close(self) -> None:
        self._client.destroy()


def prepare(database_url: str) -> str:
    """Create the peer's database on the stack's server and DBOS's system tables in it; its URL."""
    asyncio.run(ensure_database(database_url, DATABASE))
    url = dsn_with_database(database_url, DATABASE)
    command = [str(Path(sys.executable).with_name("dbos")), "migrate", "--sys-db-url", url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return url


class DBOSPeer:
    def __init__(self, url: str, postgres_pid: int, steps: int, timeout: float) -> None:
        self.system = "dbos" if steps == 1 else f"dbos-{steps}step"
        self._url = url
        self._postgres_pid = postgres_pid
        self._steps = steps
        self._timeout = timeout
        self._client: DBOSBenchClient | None = None

    def parts(self) -> dict[str, int]:
        return {"postgres": self._postgres_pid} if self._postgres_pid else {}

    def worker_command(self, index: int) -> tuple[list[str], dict[str, str]]:
        argv = [sys.executable, "-m", "bench.dbos_peer", "--database-url", self._url, "--steps", str(self._steps)]
        return [*argv, "--executor-id", f"bench-{index}"], {}

    def _bench_client(self) -> DBOSBenchClient:
        assert self._client is not None, "open() first"
        return self._client

    async def open(self) -> None:
        self._client = DBOSBenchClient(self._url, self._steps, self._timeout)

    async def reset(self) -> None:
        """Nothing to empty: each phase awaits every workflow it enqueued, and finished ones stay, as in DBOS."""

    async def round_trips(self, count: int) -> list[float]:
        return await self._bench_client().round_trips(count)

    async def sustained(self, count: int) -> float:
        return await self._bench_client().sustained(count)

    async def submit(self, count: int) -> Any:
        return await self._bench_client().submit(count)

    async def completions(self, submitted: Any) -> list[float]:
        return await self._bench_client().completions(submitted)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def stop(self) -> None:
        """The PostgreSQL server is the stack's: ``af down`` stops it."""


def main() -> None:
    parser = argparse.ArgumentParser(description="A DBOS worker of the benchmark.")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--steps", type=int, choices=sorted(WORKFLOWS), default=1)
    parser.add_argument("--executor-id", default="bench")
    args = parser.parse_args()
    config: DBOSConfig = {
        "name": "af-bench",
        "system_database_url": args.database_url,
        "executor_id": args.executor_id,
        "log_level": "WARNING",
        "run_migrations": False,
    }
    DBOS(config=config)
    DBOS.launch()
    DBOS.register_queue(
        QUEUES[args.steps],
        worker_concurrency=WORKER_CONCURRENCY,
        polling_interval_sec=QUEUE_POLL_SECONDS,
        on_conflict="always_update",
    )
    print(READY, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
