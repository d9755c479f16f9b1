"""API keys and the role each one is granted (a casbin ``g`` line), written together."""

from dataclasses import dataclass

from registry.db import Pool

ALL_TENANTS = "*"
"""The domain of a grant that holds in every tenant (platform admins)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    prefix: str
    tenant: str
    hash: str
    role: str


def subject(prefix: str) -> str:
    """The casbin subject of the key with ``prefix``."""
    return f"key:{prefix}"


async def put_key(pool: Pool, key: ApiKey, domain: str) -> None:
    """Store ``key`` and grant its role in ``domain`` (its tenant, or ``ALL_TENANTS``), replacing any earlier
    grant of the same prefix."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO api_keys (prefix, tenant, hash, role) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (prefix) DO UPDATE SET tenant = excluded.tenant, hash = excluded.hash, role = excluded.role",
            key.prefix,
            key.tenant,
            key.hash,
            key.role,
        )
        await conn.execute("DELETE FROM casbin_rules WHERE ptype = 'g' AND v0 = $1", subject(key.prefix))
        await conn.execute(
            "INSERT INTO casbin_rules (ptype, v0, v1, v2) VALUES ('g', $1, $2, $3)",
            subject(key.prefix),
            key.role,
            domain,
        )


async def find_key(pool: Pool, prefix: str) -> ApiKey | None:
    row = await pool.fetchrow("SELECT prefix, tenant, hash, role FROM api_keys WHERE prefix = $1", prefix)
    return None if row is None else ApiKey(row["prefix"], row["tenant"], row["hash"], row["role"])
