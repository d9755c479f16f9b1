"""API keys and the role each one is granted (a casbin ``g`` line), written together; revoking a key ends
its grant and every login made with it."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from registry.db import Pool
from registry.statements import rows_of

ALL_TENANTS = "*"
"""The domain of a grant that holds in every tenant (platform admins)."""
PLATFORM_ADMIN = "platform-admin"


@dataclass(frozen=True, slots=True)
class ApiKey:
    prefix: str
    tenant: str
    hash: str
    role: str
    revoked: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """What may be shown of a key: never its hash."""

    prefix: str
    tenant: str
    role: str
    created_at: datetime
    revoked_at: datetime | None


def subject(prefix: str) -> str:
    """The casbin subject of the key with ``prefix``."""
    return f"key:{prefix}"


async def put_key(pool: Pool, key: ApiKey, domain: str) -> None:
    """Store ``key`` and grant its role in ``domain`` (its tenant, or ``ALL_TENANTS``), replacing any earlier
    grant of the same prefix. A revoked key stays revoked: storing it again does not bring it back."""
    async with pool.acquire() as conn, conn.transaction():
        revoked = await conn.fetchval(
            "INSERT INTO api_keys (prefix, tenant, hash, role) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (prefix) DO UPDATE SET tenant = excluded.tenant, hash = excluded.hash, role = excluded.role"
            " RETURNING revoked_at IS NOT NULL",
            key.prefix,
            key.tenant,
            key.hash,
            key.role,
        )
        await conn.execute("DELETE FROM casbin_rules WHERE ptype = 'g' AND v0 = $1", subject(key.prefix))
        if not revoked:
            await conn.execute(
                "INSERT INTO casbin_rules (ptype, v0, v1, v2) VALUES ('g', $1, $2, $3)",
                subject(key.prefix),
                key.role,
                domain,
            )


async def find_key(pool: Pool, prefix: str) -> ApiKey | None:
    """The key with ``prefix``, revoked or not."""
    row = await pool.fetchrow(
        "SELECT prefix, tenant, hash, role, revoked_at IS NOT NULL AS revoked FROM api_keys WHERE prefix = $1",
        prefix,
    )
    return None if row is None else ApiKey(row["prefix"], row["tenant"], row["hash"], row["role"], row["revoked"])


async def is_live(pool: Pool, prefix: str) -> bool:
    """Whether the key with ``prefix`` exists and is not revoked (no hash read)."""
    live: bool | None = await pool.fetchval(
        "SELECT revoked_at IS NULL FROM api_keys WHERE prefix = $1",
        prefix,
    )
    return live is True


async def list_keys(pool: Pool, tenant: str, *, include_revoked: bool = False) -> list[KeyInfo]:
    """The keys of ``tenant``, oldest first."""
    rows = await pool.fetch(
        "SELECT prefix, tenant, role, created_at, revoked_at FROM api_keys"
        " WHERE tenant = $1 AND ($2 OR revoked_at IS NULL) ORDER BY created_at, prefix",
        tenant,
        include_revoked,
    )
    return rows_of(KeyInfo, rows)


async def key_info(pool: Pool, prefix: str) -> KeyInfo | None:
    row = await pool.fetchrow(
        "SELECT prefix, tenant, role, created_at, revoked_at FROM api_keys WHERE prefix = $1", prefix
    )
    return None if row is None else rows_of(KeyInfo, [row])[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    key: KeyInfo
    families: list[uuid.UUID]
    """The logins (refresh families) of the key revoked with it."""


class LastPlatformAdmin(Exception):
    """Revoking this key would leave no live platform-admin key."""


async def revoke_key(pool: Pool, prefix: str) -> Revocation | None:
    """Revoke the live key with ``prefix``, its grant and its logins, at once; None when there is no such live
    key. Raises ``LastPlatformAdmin`` rather than revoke the last live platform-admin key."""
    async with pool.acquire() as conn, conn.transaction():
        # The live platform admins are locked first, so two revocations cannot each leave the other's key last.
        admins = {
            row["prefix"]
            for row in await conn.fetch(
                "SELECT prefix FROM api_keys WHERE role = $1 AND revoked_at IS NULL ORDER BY prefix FOR UPDATE",
                PLATFORM_ADMIN,
            )
        }
        if admins == {prefix}:
            raise LastPlatformAdmin(prefix)
        row = await conn.fetchrow(
            "UPDATE api_keys SET revoked_at = now() WHERE prefix = $1 AND revoked_at IS NULL"
            " RETURNING prefix, tenant, role, created_at, revoked_at",
            prefix,
        )
        if row is None:
            return None
        await conn.execute("DELETE FROM casbin_rules WHERE ptype = 'g' AND v0 = $1", subject(prefix))
        families = await conn.fetch(
            "UPDATE refresh_families SET revoked_at = now() WHERE key_prefix = $1 AND revoked_at IS NULL RETURNING id",
            prefix,
        )
        return Revocation(key=rows_of(KeyInfo, [row])[0], families=[family["id"] for family in families])
