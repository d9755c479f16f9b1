"""Runs, their tasks and their events: the hot path, written in batches.

Each write is ONE statement over ``unnest`` arrays, so a batch of a thousand runs costs one round trip
and one commit. Concurrent writers are kept apart optimistically: a run's ``last_seq`` (the sequence
number of its latest event) is its version, and a change to a run applies only if the version it was
planned from is still current.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

import asyncpg

from registry.db import Pool

FINAL_RUN_STATES = frozenset({"succeeded", "failed", "cancelled"})
FINAL_TASK_STATES = frozenset({"succeeded", "failed", "cancelled", "dead"})


@dataclass(frozen=True, slots=True)
class NewRun:
    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: str
    input: str
    idempotency_key: str | None
    request_digest: str
    last_seq: int
    output: str | None = None
    """The output of a run finished as soon as it started."""
    actor: str | None = None
    """Who started it: with ``source`` (their address), written to the audit trail in the same statement."""
    source: str | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    id: str
    tenant: str
    run_id: str
    step: str
    tool_name: str
    tool_version: str
    queue: str
    input: str
    start_by: float | None = None
    """When a worker must have started it (schedule-to-start), or when a timer or signal wait is due."""
    element: str | None = None
    """The workflow element ``step`` is an instance of, where the two differ."""
    published: bool = False
    """True for what never goes on the bus (timers and signal waits): the outbox relay skips them."""


@dataclass(frozen=True, slots=True)
class NewEvent:
    run_id: str
    seq: int
    tenant: str
    type: str
    data: str


@dataclass(frozen=True, slots=True)
class SandboxUsage:
    """What running one attempt cost, as its worker measured it (see bus.messages.Result)."""

    sandbox: str | None = None
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None
    queue_seconds: float | None = None
    start_seconds: float | None = None
    run_seconds: float | None = None


_USAGE_FIELDS = ("sandbox", "cpu_seconds", "max_rss_kb", "queue_seconds", "start_seconds", "run_seconds")


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """The recorded outcome of one attempt; applies only if that attempt is still the task's current one.

    A retry moves the task to ``next_attempt`` (queued again, to be published at ``not_before``).
    """

    id: str
    run_id: str
    attempt: int
    state: str
    output: str | None
    error: str | None
    detail: str | None
    worker_id: str | None
    started_at: float | None
    finished_at: float | None
    next_attempt: int | None = None
    not_before: float | None = None
    start_by: float | None = None
    usage: SandboxUsage | None = None
    """What running the attempt cost, from its result."""


@dataclass(frozen=True, slots=True)
class RunUpdate:
    id: str
    expected_seq: int
    last_seq: int
    state: str
    output: str | None
    error: str | None


@dataclass(slots=True)
class TaskState:
    id: str
    step: str
    tool_name: str
    tool_version: str
    queue: str
    attempt: int
    state: str
    output: str | None
    error: str | None
    input: str
    element: str
    """The workflow element the task is an instance of (``step`` is the instance's key)."""


@dataclass(slots=True)
class RunState:
    """What the orchestrator plans from: a run and all of its tasks."""

    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: str
    input: str
    last_seq: int
    tasks: list[TaskState]


def _columns(rows: Sequence[object], *names: str) -> list[list[object]]:
    return [[getattr(row, name) for row in rows] for name in names]


_CREATE_RUNS = """
WITH r AS (
    INSERT INTO runs (id, tenant, target_kind, target_name, target_version, state, input,
                      idempotency_key, request_digest, last_seq, output, finished_at)
    SELECT u.id, u.tenant, u.target_kind, u.target_name, u.target_version, u.state, u.input::jsonb,
           u.idempotency_key, u.request_digest, u.last_seq, u.output::jsonb,
           CASE WHEN u.state = 'running' THEN NULL ELSE now() END
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::text[], $10::int[], $27::text[])
         AS u(id, tenant, target_kind, target_name, target_version, state, input,
              idempotency_key, request_digest, last_seq, output)
    ON CONFLICT (tenant, idempotency_key) DO NOTHING
    RETURNING id
), t AS (
    INSERT INTO tasks (id, tenant, run_id, step, tool_name, tool_version, queue, state, input, start_by, element,
                       published)
    SELECT u.id, u.tenant, u.run_id, u.step, u.tool_name, u.tool_version, u.queue, 'queued', u.input::jsonb,
           to_timestamp(u.start_by), u.element, u.published
    FROM unnest($11::uuid[], $12::text[], $13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[],
                $18::text[], $24::float8[], $25::text[], $26::bool[])
         AS u(id, tenant, run_id, step, tool_name, tool_version, queue, input, start_by, element, published)
    WHERE u.run_id IN (SELECT id FROM r)
), e AS (
    INSERT INTO events (run_id, seq, tenant, type, data)
    SELECT u.run_id, u.seq, u.tenant, u.type, u.data::jsonb
    FROM unnest($19::uuid[], $20::int[], $21::text[], $22::text[], $23::text[]) AS u(run_id, seq, tenant, type, data)
    WHERE u.run_id IN (SELECT id FROM r)
), a AS (
    INSERT INTO audit (tenant, actor, action, target, outcome, source)
    SELECT u.tenant, u.actor, 'run.start', u.id::text, 'created', u.source
    FROM unnest($1::uuid[], $2::text[], $28::text[], $29::text[]) AS u(id, tenant, actor, source)
    WHERE u.actor IS NOT NULL AND u.id IN (SELECT id FROM r)
)
SELECT id::text FROM r
"""


async def create_runs(
    pool: Pool, runs: Sequence[NewRun], tasks: Sequence[NewTask], events: Sequence[NewEvent]
) -> set[str]:
    """Insert runs with their first tasks, events and audit rows in one statement; returns the ids inserted.

    A run whose (tenant, idempotency key) already exists is not inserted, nor are its tasks and events.
    """
    rows = await pool.fetch(
        _CREATE_RUNS,
        *_columns(
            runs,
            "id",
            "tenant",
            "target_kind",
            "target_name",
            "target_version",
            "state",
            "input",
            "idempotency_key",
            "request_digest",
            "last_seq",
        ),
        *_columns(tasks, "id", "tenant", "run_id", "step", "tool_name", "tool_version", "queue", "input"),
        *_columns(events, "run_id", "seq", "tenant", "type", "data"),
        *_columns(tasks, "start_by", "element", "published"),
        *_columns(runs, "output"),
        *_columns(runs, "actor", "source"),
    )
    return {row["id"] for row in rows}


@dataclass(frozen=True, slots=True)
class ExistingRun:
    id: str
    request_digest: str


async def find_by_idempotency_keys(pool: Pool, tenant: str, keys: Sequence[str]) -> dict[str, ExistingRun]:
    rows = await pool.fetch(
        "SELECT idempotency_key, id::text, request_digest FROM runs"
        " WHERE tenant = $1 AND idempotency_key = ANY($2::text[])",
        tenant,
        list(keys),
    )
    return {row["idempotency_key"]: ExistingRun(row["id"], row["request_digest"]) for row in rows}


_LOAD_RUNS = """
SELECT r.id::text AS run_id, r.tenant, r.target_kind, r.target_name, r.target_version, r.state AS run_state,
       r.input::text AS run_input, r.last_seq,
       t.id::text AS task_id, t.step, t.tool_name, t.tool_version, t.queue, t.attempt, t.state AS task_state,
       t.output::text AS task_output, t.error AS task_error, t.input::text AS task_input,
       COALESCE(t.element, t.step) AS element
FROM runs r LEFT JOIN tasks t ON t.run_id = r.id
WHERE r.id = ANY($1::uuid[])
ORDER BY r.id, t.id
"""


async def load_runs(pool: Pool, run_ids: Sequence[str]) -> dict[str, RunState]:
    """The runs with all of their tasks, keyed by run id (unknown ids are absent)."""
    found: dict[str, RunState] = {}
    for row in await pool.fetch(_LOAD_RUNS, list(run_ids)):
        run = found.get(row["run_id"])
        if run is None:
            run = found[row["run_id"]] = RunState(
                row["run_id"],
                row["tenant"],
                row["target_kind"],
                row["target_name"],
                row["target_version"],
                row["run_state"],
                row["run_input"],
                row["last_seq"],
                [],
            )
        if row["task_id"] is not None:
            run.tasks.append(
                TaskState(
                    row["task_id"],
                    row["step"],
                    row["tool_name"],
                    row["tool_version"],
                    row["queue"],
                    row["attempt"],
                    row["task_state"],
                    row["task_output"],
                    row["task_error"],
                    row["task_input"],
                    row["element"],
                )
            )
    return found


_APPLY = """
WITH r AS (
    UPDATE runs SET state = u.state,
                    output = COALESCE(u.output::jsonb, runs.output),
                    error = COALESCE(u.error, runs.error),
                    last_seq = u.last_seq,
                    updated_at = now(),
                    finished_at = CASE WHEN u.state IN ('succeeded', 'failed', 'cancelled')
                                       THEN now() ELSE runs.finished_at END
    FROM unnest($1::uuid[], $2::int[], $3::int[], $4::text[], $5::text[], $6::text[])
         AS u(id, expected_seq, last_seq, state, output, error)
    WHERE runs.id = u.id AND runs.last_seq = u.expected_seq
    RETURNING runs.id
), t AS (
    UPDATE tasks SET state = u.state,
                     output = u.output::jsonb,
                     error = u.error,
                     detail = u.detail::jsonb,
                     worker_id = u.worker_id,
                     started_at = to_timestamp(u.started_at),
                     finished_at = CASE WHEN u.next_attempt IS NULL AND u.state NOT IN ('queued', 'running')
                                        THEN COALESCE(to_timestamp(u.finished_at), now()) END,
                     attempt = COALESCE(u.next_attempt, tasks.attempt),
                     published = tasks.published AND u.next_attempt IS NULL,
                     held = tasks.held AND u.state = 'queued',
                     not_before = to_timestamp(u.not_before),
                     start_by = to_timestamp(u.start_by),
                     sandbox = u.sandbox,
                     cpu_seconds = u.cpu_seconds,
                     max_rss_kb = u.max_rss_kb,
                     queue_seconds = u.queue_seconds,
                     start_seconds = u.start_seconds,
                     run_seconds = u.run_seconds
    FROM unnest($7::uuid[], $8::uuid[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[],
                $14::text[], $15::float8[], $16::float8[], $30::int[], $31::float8[], $32::float8[],
                $36::text[], $37::float8[], $38::int8[], $39::float8[], $40::float8[], $41::float8[])
         AS u(id, run_id, attempt, state, output, error, detail, worker_id, started_at, finished_at,
              next_attempt, not_before, start_by,
              sandbox, cpu_seconds, max_rss_kb, queue_seconds, start_seconds, run_seconds)
    WHERE tasks.id = u.id AND tasks.attempt = u.attempt AND u.run_id IN (SELECT id FROM r)
), n AS (
    INSERT INTO tasks (id, tenant, run_id, step, tool_name, tool_version, queue, state, input, start_by, element,
                       published)
    SELECT u.id, u.tenant, u.run_id, u.step, u.tool_name, u.tool_version, u.queue, 'queued', u.input::jsonb,
           to_timestamp(u.start_by), u.element, u.published
    FROM unnest($17::uuid[], $18::text[], $19::uuid[], $20::text[], $21::text[], $22::text[], $23::text[],
                $24::text[], $33::float8[], $34::text[], $35::bool[])
         AS u(id, tenant, run_id, step, tool_name, tool_version, queue, input, start_by, element, published)
    WHERE u.run_id IN (SELECT id FROM r)
), e AS (
    INSERT INTO events (run_id, seq, tenant, type, data)
    SELECT u.run_id, u.seq, u.tenant, u.type, u.data::jsonb
    FROM unnest($25::uuid[], $26::int[], $27::text[], $28::text[], $29::text[]) AS u(run_id, seq, tenant, type, data)
    WHERE u.run_id IN (SELECT id FROM r)
)
SELECT id::text FROM r
"""


def _usage_columns(updates: Sequence[TaskUpdate]) -> list[list[object]]:
    none = SandboxUsage()
    return _columns([update.usage or none for update in updates], *_USAGE_FIELDS)


async def apply_changes(
    pool: Pool,
    runs: Sequence[RunUpdate],
    task_updates: Sequence[TaskUpdate],
    new_tasks: Sequence[NewTask],
    events: Sequence[NewEvent],
) -> set[str]:
    """Apply planned changes in one statement; returns the ids of the runs whose changes applied.

    A run whose ``last_seq`` moved since it was loaded is left untouched, with its task updates, new
    tasks and events: the caller reloads it and plans again.
    """
    rows = await pool.fetch(
        _APPLY,
        *_columns(runs, "id", "expected_seq", "last_seq", "state", "output", "error"),
        *_columns(
            task_updates,
            "id",
            "run_id",
            "attempt",
            "state",
            "output",
            "error",
            "detail",
            "worker_id",
            "started_at",
            "finished_at",
        ),
        *_columns(new_tasks, "id", "tenant", "run_id", "step", "tool_name", "tool_version", "queue", "input"),
        *_columns(events, "run_id", "seq", "tenant", "type", "data"),
        *_columns(task_updates, "next_attempt", "not_before", "start_by"),
        *_columns(new_tasks, "start_by", "element", "published"),
        *_usage_columns(task_updates),
    )
    return {row["id"] for row in rows}


@dataclass(frozen=True, slots=True)
class LateTask:
    id: str
    tenant: str
    run_id: str
    attempt: int
    tool_name: str
    input: str


async def late_tasks(pool: Pool, limit: int) -> list[LateTask]:
    """Queued attempts that no worker started by their ``start_by``, and timers and signal waits now due."""
    rows = await pool.fetch(
        "SELECT id::text, tenant, run_id::text, attempt, tool_name, input::text FROM tasks"
        " WHERE start_by < now() AND state = 'queued' ORDER BY start_by LIMIT $1",
        limit,
    )
    return [LateTask(*row.values()) for row in rows]


async def mark_published(pool: Pool, task_ids: Sequence[str]) -> None:
    await pool.execute("UPDATE tasks SET published = true WHERE id = ANY($1::uuid[])", list(task_ids))


@dataclass(frozen=True, slots=True)
class PendingTask:
    id: str
    tenant: str
    run_id: str
    step: str
    tool_name: str
    tool_version: str
    queue: str
    attempt: int
    input: str


async def unpublished_tasks(pool: Pool, older_than_seconds: float, limit: int) -> list[PendingTask]:
    """The outbox: queued tasks due at least ``older_than_seconds`` ago and not known to be on the bus
    (a retry is due at its ``not_before``, a first attempt when it was recorded)."""
    rows = await pool.fetch(
        "SELECT id::text, tenant, run_id::text, step, tool_name, tool_version, queue, attempt, input::text"
        " FROM tasks WHERE NOT published AND NOT held AND state = 'queued'"
        " AND COALESCE(not_before, created_at) < now() - make_interval(secs => $1)"
        " ORDER BY created_at LIMIT $2",
        older_than_seconds,
        limit,
    )
    return [PendingTask(*row.values()) for row in rows]


# --- reads for the API ---------------------------------------------------------------------------

_RUN_COLUMNS = (
    "id::text, tenant, target_kind, target_name, target_version, state, input::text AS input,"
    " output::text AS output, error, created_at, updated_at, finished_at"
)


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: str
    input: str
    output: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    step: str
    tool_name: str
    tool_version: str
    queue: str
    attempt: int
    state: str
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


_TASK_ROW_FIELDS = tuple(field.name for field in fields(TaskRow) if field.name != "usage")


def _run_row(row: asyncpg.Record) -> RunRow:
    return RunRow(*row.values())


async def get_run(pool: Pool, tenant: str, run_id: str) -> RunRow | None:
    row = await pool.fetchrow(f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant = $1 AND id = $2::uuid", tenant, run_id)
    return None if row is None else _run_row(row)


async def get_tasks(pool: Pool, run_id: str) -> list[TaskRow]:
    rows = await pool.fetch(
        "SELECT id::text, step, tool_name, tool_version, queue, attempt, state, input::text, output::text,"
        " error, detail::text, worker_id, created_at, started_at, finished_at, COALESCE(element, step),"
        f" {', '.join(_USAGE_FIELDS)}"
        " FROM tasks WHERE run_id = $1::uuid ORDER BY id",
        run_id,
    )
    return [_task_row(row) for row in rows]


def _task_row(row: asyncpg.Record) -> TaskRow:
    values = list(row.values())
    named = dict(zip(_TASK_ROW_FIELDS, values, strict=False))
    return TaskRow(**named, usage=SandboxUsage(*values[len(_TASK_ROW_FIELDS) :]))


async def list_runs(pool: Pool, tenant: str, *, state: str | None, before_id: str | None, limit: int) -> list[RunRow]:
    """Newest first; ``before_id`` is the cursor (ids are time-ordered)."""
    rows = await pool.fetch(
        f"SELECT {_RUN_COLUMNS} FROM runs WHERE tenant = $1"
        " AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR id < $3::uuid)"
        " ORDER BY id DESC LIMIT $4",
        tenant,
        state,
        before_id,
        limit,
    )
    return [_run_row(row) for row in rows]


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    type: str
    data: str
    at: datetime


async def events_after(pool: Pool, tenant: str, run_id: str, after_seq: int) -> list[EventRow]:
    rows = await pool.fetch(
        "SELECT seq, type, data::text, at FROM events WHERE tenant = $1 AND run_id = $2::uuid AND seq > $3"
        " ORDER BY seq",
        tenant,
        run_id,
        after_seq,
    )
    return [EventRow(*row.values()) for row in rows]


async def ping(pool: Pool) -> None:
    await pool.fetchval("SELECT 1")
