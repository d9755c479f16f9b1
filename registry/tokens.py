"""What access and refresh tokens rest on: the signing keys, and refresh tokens in families.

A refresh token is used once: using it stores its successor in the same family. Presenting a token that was
already used means it leaked (or its successor did), so the whole family is revoked.
"""

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from registry.db import Pool


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: bytes
    public_key: bytes
    created_at: datetime
    expires_at: datetime


async def add_signing_key(pool: Pool, kid: str, private_key: bytes, public_key: bytes, lifetime: timedelta) -> None:
    await pool.execute(
        "INSERT INTO signing_keys (kid, private_key, public_key, expires_at) VALUES ($1, $2, $3, now() + $4)",
        kid,
        private_key,
        public_key,
        lifetime,
    )


async def live_signing_keys(pool: Pool) -> list[SigningKey]:
    """The keys that have not expired, newest first."""
    rows = await pool.fetch(
        "SELECT kid, private_key, public_key, created_at, expires_at FROM signing_keys"
        " WHERE expires_at > now() ORDER BY created_at DESC, kid"
    )
    return [SigningKey(*row.values()) for row in rows]


@dataclass(frozen=True, slots=True)
class Family:
    id: uuid.UUID
    tenant: str
    key_prefix: str


class Refresh(enum.Enum):
    ROTATED = "rotated"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REVOKED = "revoked"
    REUSED = "reused"
    """The token had been used already: its family is now revoked."""


async def start_family(pool: Pool, tenant: str, key_prefix: str, token_hash: str, lifetime: timedelta) -> Family:
    family = Family(uuid.uuid4(), tenant, key_prefix)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO refresh_families (id, tenant, key_prefix) VALUES ($1, $2, $3)", family.id, tenant, key_prefix
        )
        await conn.execute(
            "INSERT INTO refresh_tokens (hash, family, expires_at) VALUES ($1, $2, now() + $3)",
            token_hash,
            family.id,
            lifetime,
        )
    return family


async def rotate(
    pool: Pool, token_hash: str, successor_hash: str, lifetime: timedelta
) -> tuple[Refresh, Family | None]:
    """Use the refresh token ``token_hash`` once, storing ``successor_hash`` in its family."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT t.family, t.expires_at <= now() AS expired, t.rotated_at IS NOT NULL AS used,"
            " f.revoked_at IS NOT NULL AS revoked, f.tenant, f.key_prefix"
            " FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family"
            " WHERE t.hash = $1 FOR UPDATE OF t, f",
            token_hash,
        )
        if row is None:
            return Refresh.UNKNOWN, None
        family = Family(row["family"], row["tenant"], row["key_prefix"])
        if row["revoked"]:
            return Refresh.REVOKED, family
        if row["used"]:
            await conn.execute("UPDATE refresh_families SET revoked_at = now() WHERE id = $1", family.id)
            return Refresh.REUSED, family
        if row["expired"]:
            return Refresh.EXPIRED, family
        await conn.execute("UPDATE refresh_tokens SET rotated_at = now() WHERE hash = $1", token_hash)
        await conn.execute(
            "INSERT INTO refresh_tokens (hash, family, expires_at) VALUES ($1, $2, now() + $3)",
            successor_hash,
            family.id,
            lifetime,
        )
        return Refresh.ROTATED, family


async def revoke(pool: Pool, token_hash: str) -> tuple[Family | None, bool]:
    """Revoke the family (the login) of the refresh token ``token_hash``, used or not: the family (None for
    an unknown token) and whether it was live until now."""
    row = await pool.fetchrow(
        "UPDATE refresh_families f SET revoked_at = now() FROM refresh_tokens t"
        " WHERE t.hash = $1 AND f.id = t.family AND f.revoked_at IS NULL"
        " RETURNING f.id, f.tenant, f.key_prefix",
        token_hash,
    )
    if row is not None:
        return Family(row["id"], row["tenant"], row["key_prefix"]), True
    row = await pool.fetchrow(
        "SELECT f.id, f.tenant, f.key_prefix FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family"
        " WHERE t.hash = $1",
        token_hash,
    )
    return (None if row is None else Family(row["id"], row["tenant"], row["key_prefix"])), False


async def family_revoked(pool: Pool, family: uuid.UUID) -> bool:
    revoked: bool | None = await pool.fetchval(
        "SELECT revoked_at IS NOT NULL FROM refresh_families WHERE id = $1", family
    )
    return revoked is not False
