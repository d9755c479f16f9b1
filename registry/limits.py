"""In-flight limits and queue priorities, and the tasks held back by them until a slot frees.

Every admission decision (new tasks admitted or held, held tasks released) is taken in a transaction that
holds its tenant's admission lock (``admitting``), from the tenant's open tasks as that transaction reads
them after taking the lock: two control planes admitting for one tenant take turns, and the second sees
what the first committed. So the tasks table is the one ledger, and no count can drift.
"""

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bus.states import TaskState
from registry.db import Pool
from registry.runs import PendingTask
from registry.statements import literal, one_of, rows_of

TENANT_WIDE = ""
"""The ``queue`` of a tenant's own row: its limit applies to all of its queues together."""
_QUEUED = literal(TaskState.QUEUED)
_OPEN = (TaskState.QUEUED, TaskState.RUNNING)
"""A task in flight: admitted (on the bus, or running) or held."""


@dataclass(frozen=True, slots=True)
class QueueLimit:
    tenant: str
    queue: str
    max_in_flight: int | None
    """None: no limit of its own."""
    priority: int = 0
    """Among a tenant's held tasks, those of higher-priority queues are released first."""


@dataclass(frozen=True, slots=True)
class OpenTask:
    id: str
    queue: str
    held: bool


async def put_limit(pool: Pool, limit: QueueLimit) -> None:
    await pool.execute(
        "INSERT INTO queue_limits (tenant, queue, max_in_flight, priority) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (tenant, queue) DO UPDATE SET max_in_flight = excluded.max_in_flight,"
        " priority = excluded.priority",
        limit.tenant,
        limit.queue,
        limit.max_in_flight,
        limit.priority,
    )


_ADMISSION_LOCK = 0x4146_4144
"""The class (``"AFAD"``) of the transaction advisory locks ``admitting`` takes, one per tenant."""

_LOCK_AND_LIMITS = """
SELECT l.queue, l.max_in_flight, l.priority
FROM (SELECT pg_advisory_xact_lock($1, hashtext($2))) AS locked
LEFT JOIN queue_limits l ON l.tenant = $2
"""


@dataclass(frozen=True, slots=True)
class Admitting:
    """A transaction holding one tenant's admission lock, with the tenant's limits as it read them."""

    conn: Any
    tenant: str
    limits: list[QueueLimit]


@asynccontextmanager
async def admitting(pool: Pool, tenant: str) -> AsyncIterator[Admitting]:
    """Hold ``tenant``'s admission lock until the block ends, and commit what it did. What the block reads
    with ``open_tasks`` is read after the lock was taken: it includes every earlier admission's changes."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(_LOCK_AND_LIMITS, _ADMISSION_LOCK, tenant)
        found = [
            QueueLimit(tenant, r["queue"], r["max_in_flight"], r["priority"]) for r in rows if r["queue"] is not None
        ]
        yield Admitting(conn, tenant, found)


async def open_tasks(pool: Pool, tenant: str, control_queue: str) -> list[OpenTask]:
    """The tenant's tasks that are queued or running on a worker queue: admitted (on the bus) or held.
    ``pool`` may be the connection of ``admitting``."""
    rows = await pool.fetch(
        f"SELECT id::text AS id, queue, held FROM tasks WHERE tenant = $1 AND state IN {one_of(_OPEN)} AND queue <> $2",
        tenant,
        control_queue,
    )
    return rows_of(OpenTask, rows)


async def tenants_with_held(pool: Pool) -> list[str]:
    rows = await pool.fetch(f"SELECT DISTINCT tenant FROM tasks WHERE held AND state = {_QUEUED}")
    return [row["tenant"] for row in rows]


async def admit_tasks(pool: Pool, task_ids: Sequence[str]) -> None:
    """Admit these tasks, recorded held until admission decides: the outbox relay now publishes them if
    their publication fails. ``pool`` is the connection of ``admitting``."""
    await pool.execute("UPDATE tasks SET held = false WHERE id = ANY($1::uuid[]) AND held", list(task_ids))


_RELEASE = f"""
WITH chosen AS (
    SELECT x.id
    FROM unnest($2::text[], $3::int[], $4::int[]) AS q(queue, free, priority)
    CROSS JOIN LATERAL (
        SELECT t.id, t.created_at FROM tasks t
        WHERE t.tenant = $1 AND t.queue = q.queue AND t.held AND t.state = {_QUEUED}
        ORDER BY t.created_at, t.id
        LIMIT q.free
    ) x
    ORDER BY q.priority DESC, x.created_at, x.id
    LIMIT $5
)
UPDATE tasks SET held = false FROM chosen
WHERE tasks.id = chosen.id AND tasks.held
RETURNING tasks.id::text AS id, tasks.tenant, tasks.run_id::text AS run_id, tasks.step, tasks.tool_name,
          tasks.tool_version, tasks.queue, tasks.attempt, tasks.input::text AS input
"""


async def release_held(
    pool: Pool, tenant: str, free_by_queue: Sequence[tuple[str, int, int]], total: int
) -> list[PendingTask]:
    """Release up to ``total`` held tasks of ``tenant``, at most ``free`` per ``(queue, free, priority)``:
    higher-priority queues first, oldest first within a queue. The caller publishes what is returned;
    ``pool`` is the connection of ``admitting``."""
    if total <= 0 or not free_by_queue:
        return []
    rows = await pool.fetch(
        _RELEASE,
        tenant,
        [q for q, _, _ in free_by_queue],
        [f for _, f, _ in free_by_queue],
        [p for _, _, p in free_by_queue],
        total,
    )
    return rows_of(PendingTask, rows)
