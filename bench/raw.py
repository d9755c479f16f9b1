"""The floor: the same task/result round trip over raw JetStream with nats-py, no database, no API.

A client publishes a task (waiting for the stream's ack), a separate worker process pulls it, publishes
a result (waiting for the ack) and acks the task, and the client pulls the result. Messages are the
very bytes AgentFlow sends for a ``noop`` task and its result.
"""

import argparse
import asyncio
import contextlib
import signal
import time

import msgspec
import nats
import uvloop
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bus.messages import Result, Task, ToolRuntime, encode

TASKS_STREAM, RESULTS_STREAM = "BENCH_TASKS", "BENCH_RESULTS"
TASKS_SUBJECT, RESULTS_SUBJECT = "bench.tasks", "bench.results"
WORKER_DURABLE, CLIENT_DURABLE = "bench-worker", "bench-client"
RUN_ID = "01a20000-0000-7000-8000-000000000000"


def task_payload(index: int) -> bytes:
    return encode(
        Task(
            tenant="default",
            run_id=RUN_ID,
            task_id=f"01a20000-0000-7000-8000-{index:012d}",
            attempt=1,
            step="noop",
            tool="noop@1",
            runtime=ToolRuntime(builtin="noop"),
            input=msgspec.Raw(b'{"i":%d}' % index),
        )
    )


RESULT_PAYLOAD = encode(
    Result(
        tenant="default",
        run_id=RUN_ID,
        task_id="01a20000-0000-7000-8000-000000000000",
        attempt=1,
        ok=True,
        output=msgspec.Raw(b'{"i":0}'),
        worker_id="bench-worker",
        sandbox="builtin",
        started_at=time.time(),
        finished_at=time.time(),
    )
)


async def reset_streams(js: JetStreamContext) -> None:
    for name, subject, durable in (
        (TASKS_STREAM, TASKS_SUBJECT, WORKER_DURABLE),
        (RESULTS_STREAM, RESULTS_SUBJECT, CLIENT_DURABLE),
    ):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
        await js.add_stream(
            StreamConfig(name=name, subjects=[subject], retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE)
        )
        await js.add_consumer(
            name, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=50_000)
        )


async def _fetch(sub: JetStreamContext.PullSubscription, batch: int, wait: float) -> list[Msg]:
    try:
        return await sub.fetch(batch=batch, timeout=wait)
    except (TimeoutError, nats.errors.TimeoutError):
        return []


class RawClient:
    def __init__(self, url: str) -> None:
        self._url = url
        self._counter = 0

    async def __aenter__(self) -> "RawClient":
        self._nc = await nats.connect(self._url.split(","))  # one URL, or a cluster's
        self._js = self._nc.jetstream()
        self._results = await self._js.pull_subscribe_bind(CLIENT_DURABLE, stream=RESULTS_STREAM)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._nc.close()

    async def _publish(self) -> None:
        self._counter += 1
        await self._js.publish(TASKS_SUBJECT, task_payload(self._counter), headers={"Nats-Msg-Id": f"t{self._counter}"})

    async def round_trips(self, count: int) -> list[float]:
        """Seconds per task, one task at a time."""
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await self._publish()
            msgs: list[Msg] = []
            while not msgs:
                msgs = await _fetch(self._results, 1, 5.0)
            await msgs[0].ack()
            samples.append(time.perf_counter() - started)
        return samples

    async def sustained(self, count: int, window: int = 2000) -> float:
        """Tasks per second with up to ``window`` in flight."""
        in_flight = asyncio.Semaphore(window)

        async def produce() -> None:
            pending = set()
            for _ in range(count):
                await in_flight.acquire()
                pending.add(asyncio.ensure_future(self._publish()))
                if len(pending) >= 256:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)

        started = time.perf_counter()
        producer = asyncio.ensure_future(produce())
        received = 0
        while received < count:
            msgs = await _fetch(self._results, 512, 5.0)
            for msg in msgs:
                await msg.ack()
                in_flight.release()
            received += len(msgs)
        elapsed = time.perf_counter() - started
        await producer
        return count / elapsed


async def serve(url: str, concurrency: int) -> None:
    """The raw worker: pull, publish the result and wait for its ack, then ack the task."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    nc = await nats.connect(url.split(","))
    js = nc.jetstream()
    sub = await js.pull_subscribe_bind(WORKER_DURABLE, stream=TASKS_STREAM)
    in_flight: set[asyncio.Task[None]] = set()

    async def handle(msg: Msg) -> None:
        task_id = msg.headers["Nats-Msg-Id"] if msg.headers else ""
        await js.publish(RESULTS_SUBJECT, RESULT_PAYLOAD, headers={"Nats-Msg-Id": f"result-{task_id}"})
        await msg.ack()

    while not stop.is_set():
        free = concurrency - len(in_flight)
        if free <= 0:
            await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            continue
        for msg in await _fetch(sub, free, 1.0):
            task = asyncio.ensure_future(handle(msg))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="The raw JetStream worker of the benchmark.")
    parser.add_argument("--nats-url", required=True)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    uvloop.run(serve(args.nats_url, args.concurrency))


if __name__ == "__main__":
    main()
