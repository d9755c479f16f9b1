"""The audit trail: one row per mutation."""

from dataclasses import dataclass

from registry.db import Pool


@dataclass(frozen=True, slots=True)
class AuditEntry:
    tenant: str
    actor: str
    action: str
    target: str
    outcome: str
    source: str | None = None


async def record(pool: Pool, entry: AuditEntry) -> None:
    await pool.execute(
        "INSERT INTO audit (tenant, actor, action, target, outcome, source) VALUES ($1, $2, $3, $4, $5, $6)",
        entry.tenant,
        entry.actor,
        entry.action,
        entry.target,
        entry.outcome,
        entry.source,
    )
