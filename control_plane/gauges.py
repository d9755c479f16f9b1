"""Periodic samples of what the control plane does not see pass by: consumer backlogs, queue depths and the
fleet."""

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bus import Bus, Fleet
from bus.metrics import Labels
from bus.streams import consumer_levels, queue_backlogs
from control_plane import metrics

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
"""What the sampler sets: another control plane's while this one does not lead."""


async def sample(bus: Bus, fleet: Fleet, stop: asyncio.Event, leads: Callable[[], bool]) -> None:
    """Sample while this control plane ``leads`` (one set of series for all control planes)."""
    while not stop.is_set():
        try:
            if leads():
                await sample_once(bus, fleet)
            else:
                for family in SAMPLED:
                    family.replace({})
        except Exception as error:
            log.debug("sampling consumers and workers failed: %s", error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)


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
