"""Secrets, as sealed rows: the store keeps ciphertexts, wrapped data keys and the id of the master key that
wraps them, never a value in clear (sealing and opening are ``control_plane.security``'s).

Invariants kept here:

- Every row is wrapped by the master key ``secret_master`` names: a row is written only while that row
  names the writer's key (``put`` shares its lock), and ``rewrap_all`` changes every row and the name in
  one transaction, holding the lock exclusively.
- One rotation at a time, over every control plane of the database: ``rotation`` holds an advisory lock
  from the new key's staging to its installation (the key file they share is rewritten in that time).
- ``list_names`` and ``SecretInfo`` carry no ciphertext: what lists secrets cannot leak them, even sealed.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from registry.db import Pool
from registry.statements import rows_of


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretInfo:
    """What may be shown of a secret: its name and history, never its value."""

    scope: str
    name: str
    version: int
    created_at: datetime
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedRow:
    scope: str
    name: str
    version: int
    ciphertext: bytes
    wrapped_key: bytes
    master_id: str


_INFO = "scope, name, version, created_at, updated_at, updated_by"


async def claim_master(pool: Pool, master_id: str) -> str:
    """The id of the master key the database's secrets are wrapped by; ``master_id`` if none was yet."""
    await pool.execute("INSERT INTO secret_master (master_id) VALUES ($1) ON CONFLICT (only_row) DO NOTHING", master_id)
    stored = await pool.fetchval("SELECT master_id FROM secret_master")
    return str(stored)


async def current_master(pool: Pool) -> str:
    return str(await pool.fetchval("SELECT master_id FROM secret_master"))


async def put(
    pool: Pool, *, scope: str, name: str, ciphertext: bytes, wrapped_key: bytes, master_id: str, actor: str
) -> SecretInfo | None:
    """Store or replace a secret (its version goes up by one); None, writing nothing, when the database's
    master key is no longer ``master_id`` (it was rotated meanwhile)."""
    row = await pool.fetchrow(
        "WITH master AS (SELECT master_id FROM secret_master WHERE master_id = $5 FOR SHARE)"
        " INSERT INTO secrets (scope, name, ciphertext, wrapped_key, master_id, updated_by)"
        " SELECT $1, $2, $3, $4, master_id, $6 FROM master"
        " ON CONFLICT (scope, name) DO UPDATE SET ciphertext = excluded.ciphertext,"
        " wrapped_key = excluded.wrapped_key, master_id = excluded.master_id, updated_by = excluded.updated_by,"
        " version = secrets.version + 1, updated_at = now()"
        f" RETURNING {_INFO}",
        scope,
        name,
        ciphertext,
        wrapped_key,
        master_id,
        actor,
    )
    return None if row is None else rows_of(SecretInfo, [row])[0]


async def list_names(pool: Pool, scope: str) -> list[SecretInfo]:
    rows = await pool.fetch(f"SELECT {_INFO} FROM secrets WHERE scope = $1 ORDER BY name", scope)
    return rows_of(SecretInfo, rows)


async def sealed(pool: Pool, scope: str, name: str) -> SealedRow | None:
    row = await pool.fetchrow(
        "SELECT scope, name, version, ciphertext, wrapped_key, master_id FROM secrets WHERE scope = $1 AND name = $2",
        scope,
        name,
    )
    return None if row is None else rows_of(SealedRow, [row])[0]


async def delete(pool: Pool, scope: str, name: str) -> bool:
    deleted = await pool.fetchval("DELETE FROM secrets WHERE scope = $1 AND name = $2 RETURNING true", scope, name)
    return bool(deleted)


_ROTATION_LOCK = 7_230_412
"""The advisory lock one rotation holds from staging its key to installing it, in every control plane."""


@asynccontextmanager
async def rotation(pool: Pool) -> AsyncIterator[Any]:
    """A connection holding the rotation lock for as long as the block runs, or None when another rotation
    holds it."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _ROTATION_LOCK):
            yield None
            return
        try:
            yield conn
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ROTATION_LOCK)


async def rewrap_all(conn: Any, old_id: str, new_id: str, rewrap: Callable[[SealedRow], bytes]) -> int | None:
    """On the connection of ``rotation``: re-wrap every row's data key (``rewrap`` gives its new wrapped key)
    and name ``new_id`` the master key, in one transaction; answers how many rows, or None (changing nothing)
    if ``old_id`` is not the database's master key."""
    async with conn.transaction():
        current = await conn.fetchval("SELECT master_id FROM secret_master FOR UPDATE")
        if current != old_id:
            return None
        rows = rows_of(
            SealedRow,
            await conn.fetch("SELECT scope, name, version, ciphertext, wrapped_key, master_id FROM secrets FOR UPDATE"),
        )
        if rows:
            await conn.execute(
                "UPDATE secrets SET wrapped_key = u.wrapped_key, master_id = $4"
                " FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(scope, name, wrapped_key)"
                " WHERE secrets.scope = u.scope AND secrets.name = u.name",
                [row.scope for row in rows],
                [row.name for row in rows],
                [rewrap(row) for row in rows],
                new_id,
            )
        await conn.execute("UPDATE secret_master SET master_id = $1, rotated_at = now()", new_id)
        return len(rows)
