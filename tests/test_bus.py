"""The bus against a real nats-server: deliveries settle as JetStream says, a watch says "look again" once per
burst, carries a stream's messages, kept and new, and ends when its connection closes, and the fleet reads back
what workers wrote."""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bus import Bus, Fleet, WatchLost, connect, subjects
from bus.consume import bind
from bus.messages import encode
from bus.publish import Outgoing, notify, publish
from bus.streams import KEEP_SECONDS, ensure_streams, ensure_task_consumer, keep_last_blocks, withdraw_task
from bus.watch import watch, watch_carrying
from control_plane.stack.nats import NatsServer
from tests.conftest import admin_url, eventually, heartbeat_of, noop_task

TENANT = "bus-test"
TRACEPARENT = f"00-{'1' * 32}-{'2' * 16}-01"


@pytest.fixture
async def bus(tmp_root: Path, nats_server: NatsServer) -> AsyncIterator[Bus]:
    connection = await connect(admin_url(tmp_root, nats_server), "test-bus")
    await ensure_streams(connection)
    yield connection
    if not connection.client.is_closed:
        await connection.close()


async def test_a_delivery_handed_back_with_a_delay_comes_again_later_and_a_terminated_one_never(bus: Bus) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    consumer = await bind(bus, subjects.TASKS_STREAM, await ensure_task_consumer(bus, TENANT, queue))
    task = noop_task(TENANT)
    before = time.time()
    await publish(bus, Outgoing(subjects.tasks(TENANT, queue), encode(task), task.task_id, TRACEPARENT))

    [first] = await consumer.pull(1, 5.0)
    assert (first.deliveries, first.traceparent) == (1, TRACEPARENT)
    assert first.stored_at is not None and before - 1 <= first.stored_at <= time.time() + 1
    await first.nak(delay=2.0)
    assert await consumer.pull(1, 0.5) == []

    [again] = await consumer.pull(1, 10.0)
    assert again.data == first.data
    assert again.deliveries == 2
    await again.term()
    assert await consumer.pull(1, 1.0) == []


async def test_a_pull_ends_empty_as_soon_as_stop_is_set_and_the_consumer_still_delivers_afterwards(bus: Bus) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    consumer = await bind(bus, subjects.TASKS_STREAM, await ensure_task_consumer(bus, TENANT, queue))
    stop = asyncio.Event()
    pulling = asyncio.create_task(consumer.pull(1, 600.0, stop=stop))
    await asyncio.sleep(0.1)
    stop.set()
    async with asyncio.timeout(30):  # a pull that waited out its 600 s would fail here, not hang the suite
        assert await pulling == []

    task = noop_task(TENANT)
    await publish(bus, Outgoing(subjects.tasks(TENANT, queue), encode(task), task.task_id, TRACEPARENT))
    [delivery] = await consumer.pull(1, 5.0, stop=asyncio.Event())
    assert delivery.data == encode(task)
    await delivery.ack()


async def test_closing_a_bus_is_no_lost_connection_and_logs_no_warning(
    tmp_root: Path, nats_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    connection = await connect(admin_url(tmp_root, nats_server), "test-bus-close")
    with caplog.at_level(logging.INFO, logger="bus.connection"):
        await connection.close()
    assert [record.getMessage() for record in caplog.records] == []


async def test_a_watch_looks_at_once_then_once_per_burst_then_on_silence(bus: Bus) -> None:
    subject = subjects.events(TENANT, str(uuid.uuid4()))
    async with contextlib.aclosing(watch(bus, subject, every=0.2)) as looks:
        assert await anext(looks) == 0
        for n in range(3):
            await notify(bus, Outgoing(subject, b"{}", f"burst-{n}"))
        await bus.client.flush()

        taken = await anext(looks)
        while taken < 3:  # the burst may be split if the first message is taken before the others arrive
            taken += await anext(looks)
        assert taken == 3
        assert await anext(looks) == 0


async def test_a_watch_carrying_a_streams_subject_hands_over_what_it_kept_then_what_comes(bus: Bus) -> None:
    run_id = str(uuid.uuid4())
    logs = subjects.tool_logs(TENANT, run_id)
    for n in (1, 2):  # before anyone watches: AF_LOGS keeps them
        await notify(bus, Outgoing(logs, f"kept-{n}".encode(), f"{run_id}-{n}"))
    await bus.client.flush()

    carried: list[bytes] = []
    async with contextlib.aclosing(watch_carrying(bus, subjects.events(TENANT, run_id), 5.0, logs)) as looks:
        assert (await anext(looks)).carried == ()
        while len(carried) < 2:
            carried += (await anext(looks)).carried
        await notify(bus, Outgoing(logs, b"live", f"{run_id}-3"))
        while len(carried) < 3:  # it wakes the watch: well before the 5 s interval
            look = await anext(looks)
            carried += look.carried
            assert look.arrived == 0

    assert carried == [b"kept-1", b"kept-2", b"live"]


async def test_a_watch_ends_with_watch_lost_once_its_connection_is_closed(bus: Bus) -> None:
    async with contextlib.aclosing(watch(bus, subjects.events(TENANT, str(uuid.uuid4())), every=0.1)) as looks:
        assert await anext(looks) == 0
        await bus.close()
        with pytest.raises(WatchLost):
            await anext(looks)


async def test_the_fleet_is_the_heartbeats_present_now_sorted_and_without_the_malformed(bus: Bus) -> None:
    fleet = await Fleet.open(bus)
    await fleet.put(heartbeat_of(TENANT, "w-b", concurrency=2, in_flight=1))
    await fleet.put(heartbeat_of(TENANT, "w-a", concurrency=2, in_flight=1))
    garbled = subjects.worker_key(TENANT, "w-garbled")
    bucket = await bus.jetstream.key_value(subjects.WORKERS_BUCKET)  # raw: no worker writes this
    await bucket.put(garbled, b"not a heartbeat")

    mine = [b for b in await fleet.members() if b.tenant == TENANT]
    await bucket.delete(garbled)
    assert [(b.worker_id, b.concurrency, b.in_flight) for b in mine] == [("w-a", 2, 1), ("w-b", 2, 1)]

    await fleet.leave(TENANT, "w-a")
    await fleet.leave(TENANT, "w-b")
    assert [b.worker_id for b in await fleet.members() if b.tenant == TENANT] == []


async def test_an_existing_task_consumer_takes_the_ack_wait_of_the_worker_that_starts_last(bus: Bus) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    durable = await ensure_task_consumer(bus, TENANT, queue, ack_wait=30.0)
    assert await ensure_task_consumer(bus, TENANT, queue, ack_wait=4.0) == durable
    info = await bus.jetstream.consumer_info(subjects.TASKS_STREAM, durable)
    assert info.config.ack_wait == 4.0


async def test_a_withdrawn_task_is_never_delivered_again(bus: Bus) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    consumer = await bind(bus, subjects.TASKS_STREAM, await ensure_task_consumer(bus, TENANT, queue, ack_wait=1.0))
    task = noop_task(TENANT)
    await publish(bus, Outgoing(subjects.tasks(TENANT, queue), encode(task), task.task_id))
    [held] = await consumer.pull(1, 5.0)  # and never settled, as by a worker that died
    await withdraw_task(bus, held.stream_seq)
    await withdraw_task(bus, held.stream_seq)  # a second control plane doing the same is harmless
    assert await consumer.pull(1, 2.5) == []  # past the ack wait: nothing comes again


async def test_the_fleet_watch_tells_each_heartbeat_and_a_leave_and_the_bucket_tells_expiry_from_leave(
    bus: Bus,
) -> None:
    fleet = await Fleet.open(bus)
    key = subjects.worker_key(TENANT, "w-watched")
    async with contextlib.aclosing(fleet.watch()) as seen:
        await fleet.put(heartbeat_of(TENANT, "w-watched", in_flight=1))
        while (told := await anext(seen))[0] != key:
            pass
        assert told[1] is not None and told[1].in_flight == 1
        assert isinstance(await fleet.status(key), type(told[1]))
        await fleet.leave(TENANT, "w-watched")
        while (told := await anext(seen))[0] != key:
            pass
        assert told[1] is None
    assert await fleet.status(key) == "left"
    assert await fleet.status(subjects.worker_key(TENANT, "w-never-seen")) == "expired"


async def test_run_events_are_kept_by_no_stream_and_the_events_stream_of_earlier_versions_is_deleted(bus: Bus) -> None:
    [retired] = subjects.RETIRED_STREAMS
    await bus.jetstream.add_stream(name=retired, subjects=["af.*.events.*"])
    await ensure_streams(bus)
    names = {info.config.name for info in await bus.jetstream.streams_info()}
    assert retired not in names and subjects.TASKS_STREAM in names
    # A run's events still reach a watcher live, over core NATS.
    run_id = str(uuid.uuid4())
    async with contextlib.aclosing(watch(bus, subjects.events(TENANT, run_id), 30.0)) as looks:
        assert await anext(looks) == 0
        await notify(bus, Outgoing(subjects.events(TENANT, run_id), b"{}", f"{run_id}:ev:1"))
        assert await asyncio.wait_for(anext(looks), 5.0) == 1


async def test_a_keeper_holds_the_tasks_streams_last_block_while_tasks_come_and_go_and_no_worker_gets_it(
    bus: Bus, tmp_root: Path
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    consumer = await bind(bus, subjects.TASKS_STREAM, await ensure_task_consumer(bus, TENANT, queue))
    blocks = tmp_root / "nats" / "jetstream" / "$G" / "streams" / subjects.TASKS_STREAM / "msgs"

    async def one_task_done() -> None:
        task = noop_task(TENANT)
        await publish(bus, Outgoing(subjects.tasks(TENANT, queue), encode(task), task.task_id))
        [delivery] = await consumer.pull(1, 5.0)
        assert delivery.subject == subjects.tasks(TENANT, queue)
        await delivery.ack()

    async def keepers() -> int:
        info = await bus.jetstream.stream_info(subjects.TASKS_STREAM, subjects_filter=subjects.TASKS_KEEPER)
        return (info.state.subjects or {}).get(subjects.TASKS_KEEPER, 0)

    stop = asyncio.Event()
    # Two, as two control planes keep the same streams.
    keeping = [asyncio.create_task(keep_last_blocks(bus, stop)) for _ in range(2)]
    try:
        await one_task_done()
        await eventually("a keeper on the tasks stream", keepers)
        await asyncio.sleep(KEEP_SECONDS * 1.5)  # the keeper of the task above, written after it
        files = {path.name for path in blocks.glob("*.blk")}
        seen = set(files)
        for _ in range(20):
            await one_task_done()
            seen |= {path.name for path in blocks.glob("*.blk")}
        # Without the keeper, each acknowledgement empties the last block: deleted, and a new file made (20
        # files); with it, at most one, should the block fill meanwhile.
        assert len(seen - files) <= 1, sorted(seen - files)

        async def one_keeper() -> bool:
            return await keepers() == 1

        # A new keeper for the new writes, the older ones purged; other control planes on this server keep too.
        await eventually("one keeper left", one_keeper)

        async def settled() -> bool:
            before = (await bus.jetstream.stream_info(subjects.TASKS_STREAM)).state.last_seq
            await asyncio.sleep(KEEP_SECONDS * 2.5)
            return (await bus.jetstream.stream_info(subjects.TASKS_STREAM)).state.last_seq == before

        # Once messages stop, so do the keepers (the newest message is a keeper, whoever wrote it), after
        # at most one more each.
        await eventually("the keepers stopping once messages stopped", settled)
    finally:
        stop.set()
        await asyncio.gather(*keeping)
