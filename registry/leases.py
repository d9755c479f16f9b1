"""The leader's lease: one control plane of several holds it, as a PostgreSQL session advisory lock.

The lock lives on a connection of its own (never a pooled one: a pooled connection's session is shared by
whoever borrows it next). A control plane that dies, however it dies, closes that connection with its
process, and PostgreSQL frees the lock with the session; another control plane, asking every second,
takes it over within a second or two. The duties held by the lease (``docs/architecture.md``) are all safe
to run twice for a moment: the lease keeps them from running everywhere, it is not what makes them safe.
"""

import asyncio
import contextlib
import logging

import asyncpg

log = logging.getLogger(__name__)

LEADER_KEY = 0x4146_4C45_4144_4552  # "AFLEADER": the session lock's one 64-bit key
POLL_SECONDS = 1.0


class Lease:
    """Held while ``held`` is true; ``keep`` asks for it, and checks it is still held, every second."""

    def __init__(self, dsn: str, poll_seconds: float = POLL_SECONDS) -> None:
        self._dsn = dsn
        self._poll = poll_seconds
        self._conn: asyncpg.Connection | None = None
        self.held = False

    async def keep(self, stop: asyncio.Event) -> None:
        """Take the lease when it is free and keep it until ``stop``; then let it go."""
        try:
            while not stop.is_set():
                try:
                    await self._turn()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                    if self.held:
                        log.warning("lost the leader's lease (its connection failed): %s", error)
                    await self._drop()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._poll)
        finally:
            await self._drop()

    async def _turn(self) -> None:
        if self._conn is None or self._conn.is_closed():
            self.held = False
            self._conn = await asyncpg.connect(self._dsn, timeout=5)
        if self.held:
            # A session lock lasts as long as its session: the connection still answering is the lease held.
            await self._conn.fetchval("SELECT 1", timeout=5)
        elif await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_KEY, timeout=5):
            self.held = True
            log.info("this control plane holds the leader's lease")

    async def _drop(self) -> None:
        self.held = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            # Closing the session frees its lock; a close that cannot reach the server ends it all the same.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)
            if not conn.is_closed():
                conn.terminate()
