"""The API's reads of runs, their tasks and their events: one run, a page of runs, a run's event log.

Nothing here is on the hot path, and nothing here writes; the orchestrator's own reads and every write
are in ``registry.runs``. Rows are mapped onto their records by column name, states decoded into
``bus.states``. A run's tasks come in id order (the order they were created), its events in ``seq``
order, and pages of runs newest first (ids are time-ordered, so the last id of a page is the cursor).
"""

from datetime import datetime

import msgspec

from bus.states import RunState, TaskState
from registry.db import Pool
from registry.runs import RUN_COLUMNS, USAGE_FIELDS, RunRow, SandboxUsage, run_row
from registry.statements import rows_of


class TaskRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    step: str
    tool_name: str
    tool_version: str
    queue: str
    attempt: int
    state: TaskState
    input: str
    output: str | None
    error: str | None
    detail: str | None
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    element: str
    usage: SandboxUsage


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    type: str
    data: str
    at: datetime


async def get_run(pool: Pool, tenant: str, run_id: str) -> RunRow | None:
    record = await pool.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1 AND id = $2::uuid", tenant, run_id)
    return None if record is None else run_row(record)


async def list_runs(
    pool: Pool,
    tenant: str,
    *,
    state: RunState | None,
    before_id: str | None,
    limit: int,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RunRow]:
    """Newest first; ``before_id`` is the cursor (ids are time-ordered). ``target`` is a workflow's or tool's
    name; ``since`` and ``until`` bound the time the run was created (inclusive, exclusive)."""
    records = await pool.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1"
        " AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR id < $3::uuid)"
        " AND ($5::text IS NULL OR target_name = $5)"
        " AND ($6::timestamptz IS NULL OR created_at >= $6) AND ($7::timestamptz IS NULL OR created_at < $7)"
        " ORDER BY id DESC LIMIT $4",
        tenant,
        state,
        before_id,
        limit,
        target,
        since,
        until,
    )
    return rows_of(RunRow, records)


_TASK_COLUMNS = (
    "id::text AS id, step, tool_name, tool_version, queue, attempt, state, input::text AS input,"
    " output::text AS output, error, detail::text AS detail, worker_id, created_at, started_at, finished_at,"
    f" COALESCE(element, step) AS element, {', '.join(USAGE_FIELDS)}"
)


async def get_tasks(pool: Pool, run_id: str) -> list[TaskRow]:
    records = await pool.fetch(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE run_id = $1::uuid ORDER BY id", run_id)
    nested = []
    for record in records:
        columns = dict(record)
        columns["usage"] = {name: columns.pop(name) for name in USAGE_FIELDS}
        nested.append(columns)
    return rows_of(TaskRow, nested)


async def events_after(pool: Pool, tenant: str, run_id: str, after_seq: int) -> list[EventRow]:
    records = await pool.fetch(
        "SELECT seq, type, data::text AS data, at FROM events WHERE tenant = $1 AND run_id = $2::uuid AND seq > $3"
        " ORDER BY seq",
        tenant,
        run_id,
        after_seq,
    )
    return rows_of(EventRow, records)
