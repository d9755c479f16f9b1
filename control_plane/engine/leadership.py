"""Leadership: whether this control plane runs the duties that must run once across all control planes of a
database (the outbox relay, due timers and deadlines, the recovery of dead workers' tasks, the samplers),
and how many control planes are live (each holds a lease session).

The leader holds a lease (``registry.leases``, a PostgreSQL session advisory lock); every control plane asks
for it each LEASE_CHECK_SECONDS, so when the leader dies or loses its database, another leads within about
a second of PostgreSQL seeing its session end. Each duty is safe to run twice anyway (the outbox relay's
publishes are dropped as duplicates, a result applies once per attempt); the lease keeps them from running
on every control plane.
"""

import asyncio
import contextlib
import logging

import asyncpg

from control_plane import metrics
from registry import leases

log = logging.getLogger(__name__)

LEASE_CHECK_SECONDS = 1.0
SINGLETON_DUTIES = 1
"""The lease's name among the leases of a database."""


class Leadership:
    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._conn: asyncpg.Connection | None = None
        self._leads = False
        self._control_planes = 1

    def control_planes(self) -> int:
        """How many control planes were live at the last check (1 when it could not tell): what shares
        per-control-plane budgets such as request rates."""
        return self._control_planes

    def leads(self) -> bool:
        """Whether this control plane held the lease at its last check."""
        return self._leads

    async def check(self) -> bool:
        """Take the lease if it is free, or make sure it is still held; whether this control plane leads."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await leases.lease_connection(self._database_url)
            ask = leases.holds_lease if self._leads else leases.try_lease
            held = await ask(self._conn, SINGLETON_DUTIES)
            self._control_planes = await leases.control_planes(self._conn)
        except Exception as error:
            log.warning("the leader's lease could not be checked (not leading until it can): %s", error)
            held = False
            await self._drop()
        if held != self._leads:
            log.info("this control plane %s the singleton duties", "leads" if held else "no longer leads")
            metrics.LEADER.replace({(): 1.0 if held else 0.0})
        self._leads = held
        return held

    async def run(self, stop: asyncio.Event) -> None:
        """Check the lease until ``stop``; then give it up, for another control plane to take at once."""
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), LEASE_CHECK_SECONDS)
                if not stop.is_set():
                    await self.check()
        finally:
            self._leads = False
            await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)
