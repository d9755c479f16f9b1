"""The connection pool."""

from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

Pool: TypeAlias = asyncpg.Pool


class _Connection(asyncpg.Connection):  # type: ignore[misc]
    def get_reset_query(self) -> str:
        # AgentFlow keeps no session state on pooled connections (no LISTEN, SET, cursors or held advisory
        # locks), so the reset asyncpg sends on every release is a wasted round trip on the hot path.
        return ""


async def connect(dsn: str, *, min_size: int = 2, max_size: int = 10) -> Pool:
    """A pool to the database at ``dsn``; JSON columns travel as text, decoded only where needed."""
    pool: Pool | None = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=30, connection_class=_Connection
    )
    assert pool is not None
    return pool


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server address with another database name."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def ensure_database(dsn: str, database: str) -> None:
    """Create ``database`` on the server at ``dsn`` if it does not exist yet."""
    conn = await asyncpg.connect(dsn_with_database(dsn, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # Identifiers cannot be bound as parameters; quote_ident makes the name safe.
            quoted = await conn.fetchval("SELECT quote_ident($1)", database)
            await conn.execute(f"CREATE DATABASE {quoted}")
    finally:
        await conn.close()


async def ping(pool: Pool) -> None:
    await pool.fetchval("SELECT 1")
