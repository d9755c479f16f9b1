"""In-flight limits and queue priorities, and the tasks held back by them until a slot frees."""

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import asyncpg

from bus.states import TaskState
from registry.db import Pool
from registry.runs import PendingTask
from registry.statements import literal, one_of, rows_of

TENANT_WIDE = ""
"""The ``queue`` of a tenant's own row: its limit applies to all of its queues together."""
_QUEUED = literal(TaskState.QUEUED)
_OPEN = (TaskState.QUEUED, TaskState.RUNNING)
"""A task in flight: admitted (on the bus, or running) or held."""
_LEDGER_LOCK = 0x6166_6C67
"""The class of the advisory locks that take a tenant's ledger (the other key is the tenant's hash)."""
Executor: TypeAlias = Pool | asyncpg.Connection


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


async def all_limits(pool: Pool) -> list[QueueLimit]:
    rows = await pool.fetch("SELECT tenant, queue, max_in_flight, priority FROM queue_limits")
    return rows_of(QueueLimit, rows)


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


async def tenant_limits(db: Executor, tenant: str) -> list[QueueLimit]:
    rows = await db.fetch("SELECT tenant, queue, max_in_flight, priority FROM queue_limits WHERE tenant = $1", tenant)
    return rows_of(QueueLimit, rows)


async def open_tasks(db: Executor, tenant: str, control_queue: str) -> list[OpenTask]:
    """The tenant's tasks that are queued or running on a worker queue: admitted (on the bus) or held."""
    rows = await db.fetch(
        f"SELECT id::text AS id, queue, held FROM tasks WHERE tenant = $1 AND state IN {one_of(_OPEN)} AND queue <> $2",
        tenant,
        control_queue,
    )
    return rows_of(OpenTask, rows)


async def tenants_with_held(pool: Pool) -> list[str]:
    rows = await pool.fetch(f"SELECT DISTINCT tenant FROM tasks WHERE held AND state = {_QUEUED}")
    return [row["tenant"] for row in rows]


async def hold_tasks(db: Executor, task_ids: Sequence[str]) -> None:
    """Keep these recorded tasks off the bus (the outbox relay skips held tasks) until released."""
    await db.execute(f"UPDATE tasks SET held = true WHERE id = ANY($1::uuid[]) AND state = {_QUEUED}", list(task_ids))


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
    db: Executor, tenant: str, free_by_queue: Sequence[tuple[str, int, int]], total: int
) -> list[PendingTask]:
    """Release up to ``total`` held tasks of ``tenant``, at most ``free`` per ``(queue, free, priority)``:
    higher-priority queues first, oldest first within a queue. The caller publishes what is returned."""
    if total <= 0 or not free_by_queue:
        return []
    rows = await db.fetch(
        _RELEASE,
        tenant,
        [q for q, _, _ in free_by_queue],
        [f for _, f, _ in free_by_queue],
        [p for _, _, p in free_by_queue],
        total,
    )
    return rows_of(PendingTask, rows)


@dataclass(frozen=True, slots=True)
class Ledger:
    """A tenant's limits and open tasks as PostgreSQL holds them, read under the tenant's ledger lock."""

    connection: asyncpg.Connection
    """The locked transaction's: holds and releases made on it commit with the lock's release."""
    limits: list[QueueLimit]
    open_tasks: list[OpenTask]


@contextlib.asynccontextmanager
async def locked_ledger(pool: Pool, tenant: str, control_queue: str) -> AsyncIterator[Ledger]:
    """The tenant's ledger, with every other control plane's admissions and releases for the tenant kept
    out until the block's transaction ends: what one admits, the next one counts."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LEDGER_LOCK, tenant)
        yield Ledger(conn, await tenant_limits(conn, tenant), await open_tasks(conn, tenant, control_queue))
