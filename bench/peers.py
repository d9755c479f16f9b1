"""Benchmark peers (``af bench --peers``, ``make bench-peers``): the same noop workload through other task systems.

Each peer brings its own server on a free loopback port (Celery: redis-server; taskiq: nats-server; Restate:
restate-server; DBOS uses a database of its own on the stack's PostgreSQL server), runs its
workers as real processes the bench starts and stops by PID, and is measured exactly like AgentFlow: latency one
at a time, sustained tasks/s and the drain rate of a pre-filled queue with 1 and 2 workers, CPU per task.
The peers are not dependencies of AgentFlow: ``make bench-peers`` installs them into the virtualenv (and
restate-server from npm into the checkout's gitignored ``.restate-server``).
"""

import asyncio
import importlib.metadata
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

# Printed by a peer's worker once it consumes: the bench waits for it before it submits.
READY = "af-bench-worker-ready"

# Where `make bench-peers` installs restate-server's npm package (gitignored), in the checkout's root.
RESTATE_SERVER = (
    Path(__file__).resolve().parent.parent
    / ".restate-server/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
)

# The distributions whose versions the report records.
DISTRIBUTIONS = ("celery", "kombu", "redis", "taskiq", "taskiq-nats", "nats-py", "dbos", "restate-sdk", "hypercorn")


class PeerMissing(RuntimeError):
    """A peer's packages or server are not installed."""


class Peer(Protocol):
    """One peer: its server, its client inside the bench process, and the command of one of its workers."""

    system: str  # the key of its row in the JSON report (``bench.__main__.ROWS`` labels it in the table)

    def parts(self) -> dict[str, int]:
        """Server processes whose CPU counts, by name."""
        ...

    def worker_command(self, index: int) -> tuple[list[str], dict[str, str]]:
        """argv and extra environment of worker ``index``; the worker prints :data:`READY` once it consumes."""
        ...

    async def open(self) -> None: ...

    async def reset(self) -> None:
        """Empty its queue (and results) between phases; called with no worker running."""
        ...

    async def round_trips(self, count: int) -> list[float]:
        """Seconds per task, one task at a time, submit to result."""
        ...

    async def sustained(self, count: int) -> float:
        """Tasks per second from the first submit to the last result."""
        ...

    async def submit(self, count: int) -> Any:
        """Queue ``count`` tasks; returns what :meth:`completions` waits on."""
        ...

    async def completions(self, submitted: Any) -> list[float]:
        """perf_counter() at which each result arrived, sorted."""
        ...

    async def close(self) -> None: ...

    def stop(self) -> None:
        """Stop its server by PID."""
        ...


class PolledClient:
    """A peer's client that starts a task, then waits for its result by polling (taskiq, DBOS).

    Subclasses start one task in :meth:`_start` and return the ``perf_counter()`` at which its result was read
    from :meth:`_wait`; results are awaited in submission order, ``waiters`` at once.
    """

    waiters: int
    submit_at_once: int

    async def _start(self) -> Any:
        raise NotImplementedError

    async def _wait(self, handle: Any) -> float:
        raise NotImplementedError

    async def round_trips(self, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            samples.append(await self._wait(await self._start()) - started)
        return samples

    async def submit(self, count: int) -> list[Any]:
        handles: list[Any] = []
        for start in range(0, count, self.submit_at_once):
            batch = min(self.submit_at_once, count - start)
            handles += await asyncio.gather(*(self._start() for _ in range(batch)))
        return handles

    async def completions(self, handles: list[Any]) -> list[float]:
        """When each result was read, sorted."""
        queue = list(reversed(handles))
        seen: list[float] = []

        async def waiter() -> None:
            while queue:
                seen.append(await self._wait(queue.pop()))

        await asyncio.gather(*(waiter() for _ in range(self.waiters)))
        return sorted(seen)

    async def sustained(self, count: int) -> float:
        """Tasks per second: start every task, then wait for every result."""
        started = time.perf_counter()
        finished = await self.completions(await self.submit(count))
        return count / (finished[-1] - started)


def start(home: Path, timeout: float, *, database_url: str, postgres_pid: int) -> list[Peer]:
    """Start every peer's server under ``home``; ``timeout`` bounds each wait for results.

    DBOS keeps its state on the stack's PostgreSQL server (``database_url``, ``postgres_pid``), in a database of
    its own; each durable peer runs a one-step and a three-step workflow, as two rows.
    """
    try:
        from bench import restate_peer
        from bench.celery_peer import CeleryPeer
        from bench.dbos_peer import DBOSPeer, prepare
        from bench.taskiq_peer import TaskiqPeer
    except ImportError as error:
        raise PeerMissing(f"the benchmark peers are not installed ({error}): run `make bench-peers`") from error
    started: list[Peer] = []
    try:
        started.append(CeleryPeer(home, timeout))
        started.append(TaskiqPeer(home, timeout))
        dbos_url = prepare(database_url)
        started += [DBOSPeer(dbos_url, postgres_pid, steps, timeout) for steps in (1, 3)]
        started += restate_peer.start(home, timeout)
    except BaseException:
        for peer in started:
            peer.stop()
        raise
    return started


def versions() -> dict[str, str]:
    found = {}
    for name in DISTRIBUTIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "missing"
    redis = shutil.which("redis-server")
    if redis is not None:  # "Redis server v=7.0.15 sha=…"
        answer = subprocess.run([redis, "--version"], capture_output=True, text=True, timeout=10, check=False)
        found["redis-server"] = next((w[2:] for w in answer.stdout.split() if w.startswith("v=")), "unknown")
    if RESTATE_SERVER.exists():  # "restate-server 1.7.12"
        answer = subprocess.run([RESTATE_SERVER, "--version"], capture_output=True, text=True, timeout=10, check=False)
        found["restate-server"] = answer.stdout.split()[-1] if answer.stdout.split() else "unknown"
    return found


def logged_since(log: Path, offset: int, marker: str) -> bool:
    """Whether ``marker`` was written to ``log`` after byte ``offset``."""
    try:
        with open(log, "rb") as stream:
            stream.seek(offset)
            return marker.encode() in stream.read()
    except OSError:
        return False
