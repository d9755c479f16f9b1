"""Periodic samples of what the control plane does not see pass by: consumer backlogs, queue depths and the
fleet. Taken by the control plane holding the leader's lease only, so that a sum over control planes (a
dashboard's) counts each once; the others show none."""

import asyncio
import contextlib
import logging

from bus import Bus, Fleet
from bus.metrics import Labels
from bus.streams import consumer_levels, queue_backlogs
from control_plane import metrics
from registry.leases import Lease

log = logging.getLogger(__name__)

SAMPLE_SECONDS = 5.0


SAMPLED = (
    metrics.CONSUMER_PENDING,
    metrics.CONSUMER_ACK_PENDING,
    metrics.CONSUMER_REDELIVERED,
    metrics.QUEUE_DEPTH,
    metrics.QUEUE_OLDEST_AGE,
    metrics.WORKERS,
    metrics.WORKER_CAPACITY,
    metrics.WORKER_IN_FLIGHT,
)


async def sample(bus: Bus, fleet: Fleet, stop: asyncio.Event, lease: Lease) -> None:
    while not stop.is_set():
        metrics.LEADER.replace({(): 1.0 if lease.held else 0.0})
        if not lease.held:
            for family in SAMPLED:
                family.replace({})
        else:
            try:
                await sample_once(bus, fleet)
            except Exception as error:
                log.debug("sampling consumers and workers failed: %s", error)
        with contextlib.suppress(TimeoutError):
            # A control plane without the lease looks again soon: it samples within a second of taking over.
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS if lease.held else 1.0)


async def sample_once(bus: Bus, fleet: Fleet) -> None:
    levels = await consumer_levels(bus)
    metrics.CONSUMER_PENDING.replace({(c.stream, c.consumer): c.pending for c in levels})
    metrics.CONSUMER_ACK_PENDING.replace({(c.stream, c.consumer): c.ack_pending for c in levels})
    metrics.CONSUMER_REDELIVERED.replace({(c.stream, c.consumer): c.redelivered for c in levels})
    backlogs = await queue_backlogs(bus)
    metrics.QUEUE_DEPTH.replace({(b.tenant, b.queue): b.depth for b in backlogs})
    metrics.QUEUE_OLDEST_AGE.replace({(b.tenant, b.queue): b.oldest_age_seconds for b in backlogs})
    workers: dict[Labels, float] = {}
    capacity: dict[Labels, float] = {}
    in_flight: dict[Labels, float] = {}
    for beat in await fleet.members():
        for queue in beat.queues:
            key = (beat.tenant, queue)
            workers[key] = workers.get(key, 0) + 1
            capacity[key] = capacity.get(key, 0) + beat.concurrency
            in_flight[key] = in_flight.get(key, 0) + beat.in_flight
    metrics.WORKERS.replace(workers)
    metrics.WORKER_CAPACITY.replace(capacity)
    metrics.WORKER_IN_FLIGHT.replace(in_flight)
