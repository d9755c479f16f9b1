"""The worker fleet as this control plane sees it: which queues live workers serve, and what a dead worker held.

Follows the heartbeats (``bus.Fleet.watch``). A worker that stops deletes its heartbeat and is forgotten. A
worker silent for the heartbeat's TTL is asked about in the bucket itself (the authority on expiry); if its
heartbeat expired, it died, and every task attempt it held is given up as ``lost`` — those its last heartbeat
listed and those recorded as started by it (its start notices: a task taken after its last heartbeat) —: the
orchestrator moves the task to its next attempt at once (the old attempt is fenced: its result, should it
come, is not the current attempt's and changes nothing), and the old task message is withdrawn from the
stream so that no worker runs it again. An attempt another live worker now holds (JetStream redelivered it
first) is left to that worker.

Nothing is declared lost while this process's connection to NATS is younger than the TTL: after an outage
the workers need a beat or two to be heard again.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from bus import Bus, Fleet, subjects
from bus.fleet import TTL_SECONDS
from bus.messages import Heartbeat, Held, Result
from bus.streams import withdraw_task
from control_plane.engine.orchestrator import Orchestrator
from control_plane.errors import Conflict
from registry import runs
from registry.db import Pool

log = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
RETRY_WATCH_SECONDS = 1.0


class FleetView:
    def __init__(self, pool: Pool, bus: Bus, fleet: Fleet, orchestrator: Orchestrator) -> None:
        self._pool = pool
        self._bus = bus
        self._fleet = fleet
        self._orchestrator = orchestrator
        self._beats: dict[str, tuple[Heartbeat, float]] = {}
        """The latest heartbeat of each live worker by key, with when it arrived (``time.monotonic``)."""

    async def load(self) -> None:
        """Begin with the fleet as it is now (the watch that ``run`` follows then brings every change)."""
        now = time.monotonic()
        for beat in await self._fleet.members():
            self._beats[subjects.worker_key(beat.tenant, beat.worker_id)] = (beat, now)

    def serves(self, tenant: str, queue: str) -> bool:
        """Whether a live worker of ``tenant`` pulls ``queue``."""
        return any(beat.tenant == tenant and queue in beat.queues for beat, _ in self._beats.values())

    def check_served(self, tenant: str, queues: list[str], required: bool) -> list[dict[str, str]]:
        """A ``no-worker`` warning for each of ``queues`` that no live worker of ``tenant`` serves; with
        ``required``, raises Conflict for the first such queue instead."""
        warnings = []
        for queue in queues:
            if self.serves(tenant, queue):
                continue
            detail = f"no live worker serves queue {queue!r}: the run waits until one starts"
            if required:
                raise Conflict("no-worker", detail, "queue")
            warnings.append({"type": "no-worker", "queue": queue, "detail": detail, "field": "queue"})
        return warnings

    async def run(self, stop: asyncio.Event, leads: Callable[[], bool]) -> None:
        """Follow the fleet and, while this control plane ``leads``, recover the tasks of dead workers, until
        ``stop`` is set."""
        following = asyncio.create_task(self._follow())
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CHECK_SECONDS)
                if not leads():
                    continue
                try:
                    await self.check()
                except Exception as error:
                    log.warning("checking the fleet for dead workers failed: %s", error)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)

    async def _follow(self) -> None:
        while True:
            try:
                async for key, beat in self._fleet.watch():
                    if beat is None:
                        self._beats.pop(key, None)
                    else:
                        self._beats[key] = (beat, time.monotonic())
            except Exception as error:
                log.warning("watching the worker fleet failed (watching again): %s", error)
            await asyncio.sleep(RETRY_WATCH_SECONDS)

    async def check(self) -> None:
        """Ask about the workers silent for the TTL; recover what the dead ones held."""
        if self._bus.connected_for() < TTL_SECONDS:
            return
        now = time.monotonic()
        for key, (beat, heard) in list(self._beats.items()):
            if now - heard < TTL_SECONDS:
                continue
            status = await self._fleet.status(key)
            if isinstance(status, Heartbeat):
                if status.at != beat.at:
                    self._beats[key] = (status, now)  # alive: the watch is behind
                continue  # the same heartbeat, not expired yet: the bucket expires entries a little late
            del self._beats[key]
            if status == "expired":
                await self._recover(beat)

    async def _recover(self, beat: Heartbeat) -> None:
        held = {(h.task_id, h.attempt): h for h in beat.holding}
        for task in await runs.running_on(self._pool, beat.tenant, beat.worker_id):
            if (task.id, task.attempt) not in held:
                seq = task.message_seq or 0
                held[task.id, task.attempt] = Held(run_id=task.run_id, task_id=task.id, attempt=task.attempt, seq=seq)
        held_by_others = {(h.task_id, h.attempt) for other, _ in self._beats.values() for h in other.holding}
        lost = [h for key, h in held.items() if key not in held_by_others]
        log.warning(
            "worker %s of tenant %s stopped sending heartbeats; retrying the %d task(s) it held",
            beat.worker_id,
            beat.tenant,
            len(lost),
        )
        if not lost:
            return
        await self._orchestrator.apply([lost_result(beat, h) for h in lost])
        # Only after the next attempts are committed: withdrawn first, a crash here would leave a task nobody runs.
        for h in lost:
            if not h.seq:
                continue
            try:
                await withdraw_task(self._bus, h.seq)
            except Exception as error:
                # Then JetStream redelivers it after the ack wait, and the result of that old attempt is ignored.
                log.warning("could not withdraw task %s attempt %d from the stream: %s", h.task_id, h.attempt, error)


def lost_result(beat: Heartbeat, held: Held) -> Result:
    """The result of an attempt whose worker died holding it."""
    now = time.time()
    return Result(
        tenant=beat.tenant,
        run_id=held.run_id,
        task_id=held.task_id,
        attempt=held.attempt,
        ok=False,
        error=f"its worker {beat.worker_id} stopped sending heartbeats (it died or lost its connection)",
        error_kind="lost",
        worker_id=beat.worker_id,
        sandbox="none",
        started_at=now,
        finished_at=now,
    )
