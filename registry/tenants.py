"""Tenants and API keys (stored only as salted hashes, found by their prefix)."""

from dataclasses import dataclass

from registry.db import Pool


@dataclass(frozen=True, slots=True)
class ApiKey:
    prefix: str
    tenant: str
    hash: str
    role: str


async def ensure_tenant(pool: Pool, name: str) -> None:
    await pool.execute("INSERT INTO tenants (name) VALUES ($1) ON CONFLICT DO NOTHING", name)


async def put_api_key(pool: Pool, key: ApiKey) -> None:
    await pool.execute(
        "INSERT INTO api_keys (prefix, tenant, hash, role) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (prefix) DO UPDATE SET hash = excluded.hash, role = excluded.role",
        key.prefix,
        key.tenant,
        key.hash,
        key.role,
    )


async def find_api_key(pool: Pool, prefix: str) -> ApiKey | None:
    row = await pool.fetchrow("SELECT prefix, tenant, hash, role FROM api_keys WHERE prefix = $1", prefix)
    return None if row is None else ApiKey(row["prefix"], row["tenant"], row["hash"], row["role"])
