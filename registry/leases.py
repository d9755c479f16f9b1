"""Leases on duties that must run on one control plane at a time, as PostgreSQL session advisory locks.

A lease is held by a connection of its own (never a pooled one): it lasts as long as that session, so a
leader that dies, or loses its database, frees it the moment PostgreSQL sees the session end. Keepalives
make PostgreSQL notice a leader whose machine vanished within about ten seconds.
"""

import asyncpg

_LEASE_LOCK = 0x6166_6C64
"""The class of the leases' advisory locks (the other key names the duty)."""
_SESSION = {
    "application_name": "agentflow-control-plane",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
"""Every control plane holds one such session: counting them counts the live control planes."""


async def lease_connection(dsn: str) -> asyncpg.Connection:
    """A connection of its own for holding leases."""
    return await asyncpg.connect(dsn, server_settings=_SESSION, timeout=5, command_timeout=5)


async def try_lease(conn: asyncpg.Connection, duty: int) -> bool:
    """Take the duty's lease on ``conn`` if no other session holds it; True if ``conn`` holds it now (a
    session that already holds it takes it again, which changes nothing: PostgreSQL counts the locks, and the
    session's end frees them all)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LEASE_LOCK, duty))


async def holds_lease(conn: asyncpg.Connection, duty: int) -> bool:
    """Whether ``conn``'s session holds the duty's lease (one round trip: the session is alive too)."""
    found = await conn.fetchval(
        "SELECT true FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        " AND classid = $1::oid AND objid = $2::oid AND granted",
        _LEASE_LOCK,
        duty,
    )
    return bool(found)


async def control_planes(conn: asyncpg.Connection) -> int:
    """The live control planes of ``conn``'s database: the lease sessions open on it, ``conn``'s own included."""
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        _SESSION["application_name"],
    )
    return max(1, int(count))
