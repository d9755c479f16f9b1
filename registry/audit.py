"""The audit trail: one row per mutation and per authentication."""

from dataclasses import dataclass
from datetime import datetime

from registry.db import Pool
from registry.statements import rows_of


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    tenant: str
    actor: str
    action: str
    target: str
    outcome: str
    source: str | None = None
    detail: str | None = None
    """What the outcome alone does not say (a secret's reveal: what it was revealed for)."""
    at: datetime | None = None
    """Set by the database when the row is stored."""


async def record(pool: Pool, entry: AuditEntry) -> None:
    await pool.execute(
        "INSERT INTO audit (tenant, actor, action, target, outcome, source, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        entry.tenant,
        entry.actor,
        entry.action,
        entry.target,
        entry.outcome,
        entry.source,
        entry.detail,
    )


async def recent(pool: Pool, tenant: str, limit: int = 100) -> list[AuditEntry]:
    """The tenant's newest audit rows first."""
    rows = await pool.fetch(
        "SELECT tenant, actor, action, target, outcome, source, detail, at FROM audit"
        " WHERE tenant = $1 ORDER BY id DESC LIMIT $2",
        tenant,
        limit,
    )
    return rows_of(AuditEntry, rows)
