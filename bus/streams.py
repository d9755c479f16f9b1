"""Idempotent setup of AgentFlow's streams, consumers and the worker bucket."""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from bus import subjects
from bus.connection import Bus
from bus.fleet import Fleet
from bus.model_health import HealthBucket

log = logging.getLogger(__name__)

DUPLICATE_WINDOW_SECONDS = 120.0
CHANNELS_MAX_AGE_SECONDS = 7 * 24 * 3600.0
LOGS_MAX_AGE_SECONDS = 3600.0
LOGS_MAX_BYTES = 256 * 1_048_576
"""The tools' live stderr is kept for those who start following a run after its tools began: an hour, and
this much of it over every tenant at most (the oldest goes first); the record is each result's tail."""
TASK_ACK_WAIT_SECONDS = 30.0
KEEPERS = ((subjects.TASKS_STREAM, subjects.TASKS_KEEPER), (subjects.RESULTS_STREAM, subjects.RESULTS_KEEPER))
KEEP_SECONDS = 1.0
ELECTION_SECONDS = 30.0
"""How long the control plane's start waits for a NATS cluster electing leaders."""
NO_MESSAGE_FOUND = 10057
"""JetStream's error code for a message that is not (or no longer) in its stream."""
SEQUENCE_NOT_FOUND = 10043
"""What deleting a message already deleted answers (nats-server 2.10 and later)."""

STREAMS = (
    StreamConfig(
        name=subjects.TASKS_STREAM,
        subjects=[subjects.ALL_TASKS, subjects.TASKS_KEEPER],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    ),
    StreamConfig(
        name=subjects.RESULTS_STREAM,
        subjects=[subjects.ALL_RESULTS, subjects.RESULTS_KEEPER],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    ),
    StreamConfig(
        name=subjects.LOGS_STREAM,
        subjects=[subjects.ALL_LOGS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=LOGS_MAX_AGE_SECONDS,
        max_bytes=LOGS_MAX_BYTES,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    ),
    StreamConfig(
        name=subjects.CHANNELS_STREAM,
        subjects=[subjects.ALL_CHANNELS],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=CHANNELS_MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    ),
)


async def ensure_streams(bus: Bus, replicas: int = 1) -> None:
    """Create each stream, or bring an existing one to the configuration above, then the worker and model
    buckets; each with ``replicas`` copies (``AF_NATS_REPLICAS``: 3 on a 3-node cluster), an existing one
    brought to that count.

    The control plane's job: workers only wait for them (``wait_for_streams``). A NATS cluster that just lost
    a node answers nothing while it elects leaders: the whole is tried again for up to ELECTION_SECONDS.
    """
    deadline = time.monotonic() + ELECTION_SECONDS
    while True:
        try:
            return await _ensure_streams(bus, replicas)
        except (NatsTimeout, NoRespondersError, ServiceUnavailableError) as error:
            if time.monotonic() > deadline:
                raise
            log.info("JetStream did not answer while setting up streams (%s); trying again", type(error).__name__)
            await asyncio.sleep(1.0)


async def _ensure_streams(bus: Bus, replicas: int) -> None:
    js = bus.jetstream
    for base in STREAMS:
        assert base.name is not None
        config = base.evolve(num_replicas=replicas)
        try:
            await js.stream_info(base.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)
    for retired in subjects.RETIRED_STREAMS:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(retired)
            log.info("deleted stream %s, which this version no longer uses", retired)
    await _drop_legacy_task_consumers(bus)
    await Fleet.open(bus, replicas)
    await HealthBucket.open(bus, replicas)
    for bucket in (subjects.WORKERS_BUCKET, subjects.MODELS_BUCKET):
        info = await js.stream_info(f"KV_{bucket}")
        if info.config.num_replicas != replicas:
            await js.update_stream(info.config.evolve(num_replicas=replicas))


async def _drop_legacy_task_consumers(bus: Bus) -> None:
    """A work-queue stream allows one consumer per subject, so a consumer of the old naming would keep its
    successor from being created. Its tasks stay in the stream and go to the new consumer."""
    for info in await bus.jetstream.consumers_info(subjects.TASKS_STREAM):
        if info.name.startswith(subjects.LEGACY_TASK_CONSUMER_PREFIX):
            log.info("removing task consumer %s (named the old way)", info.name)
            with contextlib.suppress(NotFoundError):
                await bus.jetstream.delete_consumer(subjects.TASKS_STREAM, info.name)


async def keep_last_blocks(bus: Bus, stop: asyncio.Event) -> None:
    """Keep one message in the last block of each work-queue stream until ``stop``.

    A work-queue stream removes a message once it is acknowledged, and nats-server's file store deletes a
    block left empty; when that block is the last, it creates a new file to write to. With tasks done one at
    a time, every acknowledgement empties the last block: a file deleted and another created per task and
    per result, the largest part of nats-server's time here (measured with its profiler: 70% of its CPU, in
    ``openat``). A message no consumer takes keeps the block in use. Blocks fill and roll over, so every
    ``KEEP_SECONDS`` while messages arrive a new keeper is written (into the block written now) and the
    older ones purged."""
    while not stop.is_set():
        for stream, subject in KEEPERS:
            try:
                await _keep(bus, stream, subject)
            except Exception as error:  # a stream being set up or electing a leader: the next pass keeps it
                log.debug("cannot keep the last block of %s: %s", stream, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), KEEP_SECONDS)


async def _keep(bus: Bus, stream: str, subject: str) -> None:
    """Write a new keeper on ``stream`` unless its newest message is one (written by any control plane, so
    that several of them stop once messages stop), and purge all keepers but the newest."""
    js = bus.jetstream
    state = (await js.stream_info(stream, subjects_filter=subject)).state
    kept = (state.subjects or {}).get(subject, 0)
    if not kept or (await js.get_last_msg(stream, subject)).seq != state.last_seq:
        await js.publish(subject, b"", stream=stream)
        kept += 1
    if kept > 1:
        await js.purge_stream(stream, subject=subject, keep=1)


async def wait_for_streams(bus: Bus, every: float = 0.5) -> None:
    """Wait until the control plane has set up the streams and the worker bucket.

    A worker never creates or updates them: it may lack the permission, and a worker of another version
    would bring them to its own configuration.
    """
    waiting = False
    while True:
        try:
            await bus.jetstream.stream_info(f"KV_{subjects.WORKERS_BUCKET}")
            return
        except NotFoundError:
            if not waiting:
                log.info("waiting for the control plane to create the streams")
                waiting = True
            await asyncio.sleep(every)
        except (NatsTimeout, NoRespondersError, ServiceUnavailableError) as error:
            # A NATS cluster electing leaders (a node just lost, or all just started) answers nothing for a while.
            log.info("waiting for JetStream to answer (%s)", type(error).__name__)
            await asyncio.sleep(every)


async def ensure_task_consumer(bus: Bus, tenant: str, queue: str, ack_wait: float = TASK_ACK_WAIT_SECONDS) -> str:
    """The durable pull consumer shared by every worker of (tenant, queue); returns its name.

    An existing consumer whose ack wait differs is brought to ``ack_wait``: the worker that starts last sets it.
    """
    js = bus.jetstream
    durable = subjects.task_consumer(tenant, queue)
    with contextlib.suppress(NotFoundError):
        info = await js.consumer_info(subjects.TASKS_STREAM, durable)
        if info.config.ack_wait is not None and abs(info.config.ack_wait - ack_wait) < 0.001:
            return durable
        log.info("setting the ack wait of %s to %g s (was %s s)", durable, ack_wait, info.config.ack_wait)
    # Creating a consumer that exists with another configuration updates it.
    await js.add_consumer(
        subjects.TASKS_STREAM,
        ConsumerConfig(
            # With ``name`` the filter travels in the request's subject, which NATS permissions can check
            # and the server matches against the configuration.
            name=durable,
            durable_name=durable,
            filter_subject=subjects.tasks(tenant, queue),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_ack_pending=20_000,
            max_waiting=512,
        ),
    )
    return durable


async def withdraw_task(bus: Bus, seq: int) -> None:
    """Delete the task message at ``seq`` from the tasks stream (if it is still there), so that JetStream never
    redelivers it: the attempt it carries was given up (its worker died) and a new one published."""
    try:
        await bus.jetstream.delete_msg(subjects.TASKS_STREAM, seq)
    except APIError as error:
        if error.err_code not in (NO_MESSAGE_FOUND, SEQUENCE_NOT_FOUND):
            raise


async def ensure_results_consumer(bus: Bus) -> str:
    await bus.jetstream.add_consumer(
        subjects.RESULTS_STREAM,
        ConsumerConfig(
            durable_name=subjects.RESULTS_CONSUMER,
            filter_subject=subjects.ALL_RESULTS,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30.0,
            max_ack_pending=50_000,
        ),
    )
    return subjects.RESULTS_CONSUMER


@dataclass(frozen=True, slots=True)
class ConsumerLevel:
    """How far behind one durable consumer is, from its consumer info."""

    stream: str
    consumer: str
    pending: int
    """Messages on the stream not yet delivered to the consumer."""
    ack_pending: int
    """Delivered and not yet acknowledged."""
    redelivered: int
    """Delivered more than once and not yet acknowledged."""


async def consumer_levels(bus: Bus) -> list[ConsumerLevel]:
    """The levels of every consumer of the task and result streams."""
    levels = []
    for stream in (subjects.TASKS_STREAM, subjects.RESULTS_STREAM):
        for info in await bus.jetstream.consumers_info(stream):
            name = info.name or info.config.durable_name or ""
            levels.append(
                ConsumerLevel(stream, name, info.num_pending or 0, info.num_ack_pending or 0, info.num_redelivered or 0)
            )
    return levels


@dataclass(frozen=True, slots=True)
class QueueBacklog:
    """The tasks of one (tenant, queue) on the bus that no worker has taken yet: what a fleet scales on."""

    tenant: str
    queue: str
    depth: int
    """Tasks published and not yet delivered to any worker (tasks held by admission are not on the bus)."""
    oldest_age_seconds: float
    """How long the oldest of them has waited since it was published; 0 when none waits."""


async def queue_backlogs(bus: Bus, tenant: str | None = None) -> list[QueueBacklog]:
    """The backlog of every queue holding tasks (of ``tenant``, or of every tenant), sorted by tenant and queue.

    A queue no worker ever pulled has no consumer: all its messages wait. Otherwise what waits is what its
    consumer has not delivered yet, starting after the last stream sequence it delivered.
    """
    js = bus.jetstream
    info = await js.stream_info(
        subjects.TASKS_STREAM, subjects_filter=subjects.ALL_TASKS if tenant is None else subjects.tenant_tasks(tenant)
    )
    consumers = {c.name: c for c in await js.consumers_info(subjects.TASKS_STREAM)}
    backlogs = []
    for subject, count in sorted((info.state.subjects or {}).items()):
        owner, queue = subjects.tasks_of(subject)
        consumer = consumers.get(subjects.task_consumer(owner, queue))
        depth, after = count, 0
        if consumer is not None:
            depth = consumer.num_pending or 0
            after = consumer.delivered.stream_seq if consumer.delivered is not None else 0
        age = 0.0
        if depth:
            with contextlib.suppress(NotFoundError):
                oldest = await js.get_msg(subjects.TASKS_STREAM, seq=after + 1, subject=subject, next=True)
                if oldest.time is not None:
                    age = max(0.0, time.time() - oldest.time.timestamp())
        backlogs.append(QueueBacklog(owner, queue, depth, age))
    return backlogs
