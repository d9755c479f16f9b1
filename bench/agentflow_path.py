"""AgentFlow's full durable path: HTTP submit → PostgreSQL → JetStream → worker → result → PostgreSQL.

A run counts as done when its ``run.succeeded`` event arrives: the control plane publishes it only after
the run's final state is committed.
"""

import asyncio
import time
from collections.abc import Sequence
from urllib.parse import urlsplit

import msgspec

from bench.http import LeanHTTP
from bus import Bus, Notice, connect, subjects
from bus.messages import RunEvents, decode
from bus.watch import listen

FINAL = frozenset({"run.succeeded", "run.failed", "run.cancelled"})


class Completions:
    """Watches every run's events on the bus: when each run finished, which did not succeed, and how many
    tasks succeeded in each."""

    _bus: Bus

    def __init__(self) -> None:
        self.finished: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.tasks: dict[str, int] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}

    async def start(self, url: str) -> None:
        self._bus = await connect(url, "bench-completions")
        await listen(self._bus, subjects.ALL_EVENTS, self._on_events)

    async def close(self) -> None:
        await self._bus.close()

    async def _on_events(self, msg: Notice) -> None:
        now = time.perf_counter()
        events = decode(msg.data, RunEvents)
        for event in events.events:
            if event.type == "task.succeeded":
                self.tasks[events.run_id] = self.tasks.get(events.run_id, 0) + 1
            elif event.type in FINAL:
                if event.type != "run.succeeded":
                    self.failed[events.run_id] = event.type
                self.finished[events.run_id] = now
                waiter = self._waiters.pop(events.run_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(now)

    async def wait(self, run_id: str, seconds: float = 30.0) -> float:
        if run_id in self.finished:
            return self.finished[run_id]
        waiter = self._waiters[run_id] = asyncio.get_running_loop().create_future()
        return await asyncio.wait_for(waiter, seconds)


class AgentFlowClient:
    def __init__(
        self,
        api_url: str,
        nats_url: str,
        token: str,
        tool: str,
        *,
        workflow: str = "",
        kind: str = "tool",
        more_urls: Sequence[str] = (),
    ) -> None:
        """Runs of ``tool`` alone (with ``kind`` "agent": of the agent of that name), or with ``workflow``
        (``name@version``) runs of that workflow; submitted to ``api_url`` or, in turn, to the control planes of
        ``more_urls`` too."""
        self._addresses = [
            (parts.hostname or "127.0.0.1", parts.port or 80) for parts in map(urlsplit, [api_url, *more_urls])
        ]
        self._nats_url = nats_url
        self._token = token
        self._tool = tool
        self._kind = kind.encode()
        self._workflow = workflow
        self._completions = Completions()
        self._counter = 0

    async def __aenter__(self) -> "AgentFlowClient":
        await self._completions.start(self._nats_url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._completions.close()

    async def _connection(self, index: int = 0) -> LeanHTTP:
        """A connection to control plane ``index`` (modulo their number)."""
        host, port = self._addresses[index % len(self._addresses)]
        http = LeanHTTP(host, port, self._token)
        await http.connect()
        return http

    def _item(self) -> bytes:
        self._counter += 1
        if self._workflow:
            return b'{"workflow":"%s","input":{"n":%d}}' % (self._workflow.encode(), self._counter)
        return b'{"%s":"%s","input":{"i":%d}}' % (self._kind, self._tool.encode(), self._counter)

    async def submit_batch(self, http: LeanHTTP, size: int) -> list[str]:
        """Submit ``size`` runs in one ``POST /v1/runs:batch``; their ids."""
        body = b'{"runs":[' + b",".join(self._item() for _ in range(size)) + b"]}"
        status, answer = await http.post("/v1/runs:batch", body)
        if status != 200:
            raise RuntimeError(f"batch submit answered {status}: {answer[:300]!r}")
        run_ids = []
        for item in msgspec.json.decode(answer)["items"]:
            if "id" not in item:
                raise RuntimeError(f"a batch item was refused: {item}")
            run_ids.append(item["id"])
        return run_ids

    async def round_trips(self, count: int, *, pause: float = 0.0) -> list[float]:
        """Seconds from the HTTP submit to the committed final state, one run at a time, ``pause`` seconds
        between them."""
        connections = [await self._connection(index) for index in range(len(self._addresses))]
        samples = []
        try:
            for number in range(count):
                http = connections[number % len(connections)]
                await asyncio.sleep(pause)
                started = time.perf_counter()
                status, body = await http.post("/v1/runs", self._item())
                if status != 201:
                    raise RuntimeError(f"submit answered {status}: {body[:300]!r}")
                finished = await self._completions.wait(msgspec.json.decode(body)["id"])
                samples.append(finished - started)
        finally:
            for http in connections:
                await http.close()
        self._check_failures()
        return samples

    async def sustained(self, count: int, *, batch: int = 250, connections: int = 2, window: int = 4000) -> float:
        """Runs per second submitted through ``POST /v1/runs:batch`` with up to ``window`` unfinished."""
        submitted: list[str] = []
        in_flight = asyncio.Semaphore(window)
        remaining = [count]

        async def submit_loop(index: int) -> None:
            http = await self._connection(index)
            try:
                while remaining[0] > 0:
                    size = min(batch, remaining[0])
                    remaining[0] -= size
                    for _ in range(size):
                        await in_flight.acquire()
                    submitted.extend(await self.submit_batch(http, size))
            finally:
                await http.close()

        done_before = len(self._completions.finished)
        started = time.perf_counter()
        connections = max(connections, len(self._addresses))
        submitters = [asyncio.ensure_future(submit_loop(index)) for index in range(connections)]
        seen = 0
        while seen < count:
            await asyncio.sleep(0.005)
            now_done = len(self._completions.finished) - done_before
            for _ in range(now_done - seen):
                in_flight.release()
            seen = now_done
            for submitter in submitters:
                if submitter.done() and submitter.exception():
                    raise submitter.exception()  # type: ignore[misc]
        await asyncio.gather(*submitters)
        last = max(self._completions.finished[run_id] for run_id in submitted)
        self._check_failures()
        return count / (last - started)

    def _check_failures(self) -> None:
        if self._completions.failed:
            run_id, how = next(iter(self._completions.failed.items()))
            raise RuntimeError(f"{len(self._completions.failed)} run(s) did not succeed, e.g. {run_id}: {how}")
