"""Model deployments: documents stored per scope (a tenant, or ``*`` for the platform), applied in place.

Unlike tools and workflows a deployment is not versioned: applying it again replaces it (its endpoint,
prices or place in a chain change while its callers keep naming it).
"""

from dataclasses import dataclass
from datetime import datetime

from registry.db import Pool
from registry.statements import rows_of


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredModel:
    scope: str
    name: str
    spec: str
    """The deployment's JSON document, as text."""
    digest: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = "scope, name, spec::text AS spec, digest, created_at, updated_at"


async def put(pool: Pool, scope: str, name: str, spec: str, digest: str) -> tuple[StoredModel, str]:
    """Store or replace a deployment; answers it and ``created``, ``updated`` or ``unchanged``."""
    row = await pool.fetchrow(
        "WITH old AS (SELECT digest FROM model_deployments WHERE scope = $1 AND name = $2)"
        " INSERT INTO model_deployments (scope, name, spec, digest) VALUES ($1, $2, $3::jsonb, $4)"
        " ON CONFLICT (scope, name) DO UPDATE SET spec = excluded.spec, digest = excluded.digest,"
        " updated_at = CASE WHEN model_deployments.digest = excluded.digest THEN model_deployments.updated_at"
        " ELSE now() END"
        f" RETURNING {_COLUMNS}, (SELECT digest FROM old) AS old_digest",
        scope,
        name,
        spec,
        digest,
    )
    assert row is not None
    old = row["old_digest"]
    outcome = "created" if old is None else "unchanged" if old == digest else "updated"
    stored = dict(row)
    del stored["old_digest"]
    return rows_of(StoredModel, [stored])[0], outcome


async def visible(pool: Pool, tenant: str) -> list[StoredModel]:
    """The tenant's own deployments and the platform's, by scope then name."""
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM model_deployments WHERE scope = $1 OR scope = '*' ORDER BY scope = '*', name",
        tenant,
    )
    return rows_of(StoredModel, rows)


async def delete(pool: Pool, scope: str, name: str) -> bool:
    deleted = await pool.fetchval(
        "DELETE FROM model_deployments WHERE scope = $1 AND name = $2 RETURNING true", scope, name
    )
    return bool(deleted)


async def record_policy(pool: Pool, tenant: str) -> str:
    """``full`` or ``metadata``: how much of its prompts and responses the tenant lets the gateway keep."""
    value = await pool.fetchval("SELECT record FROM llm_settings WHERE tenant = $1", tenant)
    return str(value or "full")


async def set_record_policy(pool: Pool, tenant: str, record: str) -> None:
    await pool.execute(
        "INSERT INTO llm_settings (tenant, record) VALUES ($1, $2)"
        " ON CONFLICT (tenant) DO UPDATE SET record = excluded.record",
        tenant,
        record,
    )
