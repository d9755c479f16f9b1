"""Tenants and their limits (None: the control plane's default)."""

from dataclasses import dataclass
from datetime import datetime

from bus.states import RunState
from registry.db import Pool
from registry.statements import one_of


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    created_at: datetime
    max_concurrent_runs: int | None = None
    requests_per_second: float | None = None


_COLUMNS = "name, created_at, max_concurrent_runs, requests_per_second"
_UNFINISHED = (RunState.PENDING, RunState.RUNNING)


async def ensure_tenant(pool: Pool, name: str) -> None:
    await pool.execute("INSERT INTO tenants (name) VALUES ($1) ON CONFLICT DO NOTHING", name)


async def create_tenant(
    pool: Pool, name: str, max_concurrent_runs: int | None, requests_per_second: float | None
) -> Tenant | None:
    """The new tenant; None when one of that name exists already."""
    row = await pool.fetchrow(
        "INSERT INTO tenants (name, max_concurrent_runs, requests_per_second) VALUES ($1, $2, $3)"
        f" ON CONFLICT DO NOTHING RETURNING {_COLUMNS}",
        name,
        max_concurrent_runs,
        requests_per_second,
    )
    return None if row is None else Tenant(*row.values())


async def get_tenant(pool: Pool, name: str) -> Tenant | None:
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM tenants WHERE name = $1", name)
    return None if row is None else Tenant(*row.values())


async def list_tenants(pool: Pool) -> list[Tenant]:
    return [Tenant(*row.values()) for row in await pool.fetch(f"SELECT {_COLUMNS} FROM tenants ORDER BY name")]


async def active_runs(pool: Pool, tenant: str) -> int:
    """How many runs of ``tenant`` have not finished."""
    count: int = await pool.fetchval(
        f"SELECT count(*) FROM runs WHERE tenant = $1 AND state IN {one_of(_UNFINISHED)}", tenant
    )
    return count
