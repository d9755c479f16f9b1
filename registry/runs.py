"""Runs, their tasks and their events on the hot path: written in batches, read back for planning.

What the store keeps true:

- Each write is ONE statement over ``unnest`` arrays, so a batch of a thousand runs costs one round trip
  and one commit. Its placeholders are generated from the fields of the records a batch is made of
  (``registry.statements``), and the new-task and event inserts are written once for both statements.
- A run's ``last_seq`` (the sequence number of its latest event) is its version. A change to a run applies
  only if the version it was planned from is still current, and then with all of its task updates, new
  tasks and events; otherwise none of them does, and the caller reads the run and plans again.
- A task update applies only to the attempt it names, so a result applies once per (task_id, attempt).
- A run is recorded with its first tasks, its first events and its audit row, or, when its (tenant,
  idempotency key) is already taken, not at all.
- New tasks are recorded queued and unpublished (unless the control plane keeps them itself: timers and
  signal waits); ``unpublished_tasks`` is the outbox that finds those that never reached the bus.
- A run's ``finished_at`` is set when it reaches a final state; a task's when it reaches one with no
  attempt to follow.

The API's reads (runs, a run's tasks, its events) are in ``registry.run_reads``.
"""

from collections.abc import Sequence
from datetime import datetime

import asyncpg
import msgspec

from bus.states import FINAL_RUN_STATES, FINAL_TASK_STATES, RunState, TaskState
from registry.db import Pool
from registry.statements import Columns, Statement, literal, one_of, rows_of


class NewRun(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: RunState
    input: str
    idempotency_key: str | None
    request_digest: str
    last_seq: int
    output: str | None = None
    """The output of a run finished as soon as it started."""
    actor: str | None = None
    """Who started it: with ``source`` (their address), written to the audit trail in the same statement."""
    source: str | None = None


class NewTask(msgspec.Struct, frozen=True, kw_only=True):
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
    state: str = TaskState.QUEUED
    """Queued, or succeeded for what the control plane records already finished (a plan step's plan)."""
    output: str | None = None
    """The output (JSON) of what is recorded succeeded."""


class NewEvent(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    seq: int
    tenant: str
    type: str
    data: str


class SandboxUsage(msgspec.Struct, frozen=True, kw_only=True):
    """What running one attempt cost, as its worker measured it (see bus.messages.Result); stored in the
    task columns of its field names."""

    sandbox: str | None = None
    cpu_seconds: float | None = None
    max_rss_kb: int | None = None
    queue_seconds: float | None = None
    start_seconds: float | None = None
    run_seconds: float | None = None


USAGE_FIELDS = SandboxUsage.__struct_fields__
"""The task columns that hold a SandboxUsage."""


class TaskUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """The recorded outcome of one attempt; applies only if that attempt is still the task's current one.

    Every field is written as given, a None clearing its column: a start notice or a cancellation names
    only what it knows. A retry moves the task to ``next_attempt`` (queued again, to be published at
    ``not_before``).
    """

    id: str
    run_id: str
    attempt: int
    state: TaskState
    output: str | None = None
    error: str | None = None
    detail: str | None = None
    worker_id: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    next_attempt: int | None = None
    not_before: float | None = None
    start_by: float | None = None
    usage: SandboxUsage = SandboxUsage()
    """What running the attempt cost, from its result (nothing known: every field None)."""
    message_seq: int | None = None
    """The sequence of the task message in the tasks stream, as the worker that started the attempt said."""


class RunUpdate(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    expected_seq: int
    """The version the change was planned from: it applies only if the run is still at it."""
    last_seq: int
    state: RunState
    output: str | None = None
    error: str | None = None


class StoredTask(msgspec.Struct, frozen=True, kw_only=True):
    """A task as the orchestrator plans from it."""

    id: str
    step: str
    tool_name: str
    tool_version: str
    queue: str
    attempt: int
    state: TaskState
    output: str | None
    error: str | None
    input: str
    element: str
    """The workflow element the task is an instance of (``step`` is the instance's key)."""
    worker_id: str | None = None
    """The worker of its latest attempt that started, and when (seconds since the epoch)."""
    started_at: float | None = None


class StoredRun(msgspec.Struct, frozen=True, kw_only=True):
    """A run as the orchestrator plans from it, with all of its tasks in the order they were created."""

    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: RunState
    input: str
    last_seq: int
    tasks: tuple[StoredTask, ...]


RUN_COLUMNS = (
    "id::text AS id, tenant, target_kind, target_name, target_version, state, input::text AS input,"
    " output::text AS output, error, created_at, updated_at, finished_at, last_seq"
)
"""The columns of a RunRow, selected from ``runs`` (or from what a write returned of them)."""


class RunRow(msgspec.Struct, frozen=True, kw_only=True):
    """A run as the API shows it."""

    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: RunState
    input: str
    output: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    last_seq: int
    """The sequence number of its latest event."""


def run_row(record: asyncpg.Record) -> RunRow:
    (row,) = rows_of(RunRow, [record])
    return row


# --- the batches: each record's fields are its columns -----------------------------------------------

_NEW_RUNS = Columns(NewRun, id="uuid")
_NEW_TASKS = Columns(NewTask, id="uuid", run_id="uuid")
_NEW_EVENTS = Columns(NewEvent, run_id="uuid")
_RUN_UPDATES = Columns(RunUpdate, id="uuid")
_TASK_UPDATES = Columns(TaskUpdate, id="uuid", run_id="uuid", max_rss_kb="int8", message_seq="int8")


def _insert_tasks(s: Statement) -> str:
    """New tasks of the runs the statement's ``r`` wrote: queued, or recorded succeeded."""
    return f"""INSERT INTO tasks (id, tenant, run_id, step, tool_name, tool_version, queue, state, input, start_by,
                       element, published, output, finished_at)
    SELECT u.id, u.tenant, u.run_id, u.step, u.tool_name, u.tool_version, u.queue, u.state,
           u.input::jsonb, to_timestamp(u.start_by), u.element, u.published, u.output::jsonb,
           CASE WHEN u.state = {literal(TaskState.QUEUED)} THEN NULL ELSE now() END
    FROM {s.unnest(_NEW_TASKS)}
    WHERE u.run_id IN (SELECT id FROM r)"""


def _insert_events(s: Statement) -> str:
    """New events of the runs the statement's ``r`` wrote."""
    return f"""INSERT INTO events (run_id, seq, tenant, type, data)
    SELECT u.run_id, u.seq, u.tenant, u.type, u.data::jsonb
    FROM {s.unnest(_NEW_EVENTS)}
    WHERE u.run_id IN (SELECT id FROM r)"""


def _create_runs(s: Statement) -> str:
    """Runs with their first tasks, events and audit rows, except those whose idempotency key is taken."""
    return f"""
WITH r AS (
    INSERT INTO runs (id, tenant, target_kind, target_name, target_version, state, input,
                      idempotency_key, request_digest, last_seq, output, finished_at)
    SELECT u.id, u.tenant, u.target_kind, u.target_name, u.target_version, u.state, u.input::jsonb,
           u.idempotency_key, u.request_digest, u.last_seq, u.output::jsonb,
           CASE WHEN u.state = {literal(RunState.RUNNING)} THEN NULL ELSE now() END
    FROM {s.unnest(_NEW_RUNS)}
    ON CONFLICT (tenant, idempotency_key) DO NOTHING
    RETURNING id
), t AS (
    {_insert_tasks(s)}
), e AS (
    {_insert_events(s)}
), a AS (
    INSERT INTO audit (tenant, actor, action, target, outcome, source)
    SELECT u.tenant, u.actor, 'run.start', u.id::text, 'created', u.source
    FROM {s.unnest(_NEW_RUNS)}
    WHERE u.actor IS NOT NULL AND u.id IN (SELECT id FROM r)
)
SELECT id::text FROM r
"""


_CREATE_RUNS = Statement(_create_runs)


async def create_runs(
    pool: Pool, runs: Sequence[NewRun], tasks: Sequence[NewTask], events: Sequence[NewEvent]
) -> set[str]:
    """Insert runs with their first tasks, events and audit rows in one statement; returns the ids inserted.

    A run whose (tenant, idempotency key) already exists is not inserted, nor are its tasks and events.
    """
    args = _CREATE_RUNS.args({_NEW_RUNS: runs, _NEW_TASKS: tasks, _NEW_EVENTS: events})
    return {record["id"] for record in await pool.fetch(_CREATE_RUNS.sql, *args)}


class ExistingRun(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    request_digest: str
    state: RunState


async def find_by_idempotency_keys(pool: Pool, tenant: str, keys: Sequence[str]) -> dict[str, ExistingRun]:
    records = await pool.fetch(
        "SELECT idempotency_key, id::text AS id, request_digest, state FROM runs"
        " WHERE tenant = $1 AND idempotency_key = ANY($2::text[])",
        tenant,
        list(keys),
    )
    return {
        record["idempotency_key"]: ExistingRun(
            id=record["id"], request_digest=record["request_digest"], state=RunState(record["state"])
        )
        for record in records
    }


_LOAD_RUNS = """
SELECT r.id::text AS run_id, r.tenant, r.target_kind, r.target_name, r.target_version, r.state AS run_state,
       r.input::text AS run_input, r.last_seq,
       t.id::text AS task_id, t.step, t.tool_name, t.tool_version, t.queue, t.attempt, t.state AS task_state,
       t.output::text AS task_output, t.error AS task_error, t.input::text AS task_input,
       COALESCE(t.element, t.step) AS element, t.worker_id, extract(epoch FROM t.started_at)::float8 AS started_at
FROM runs r LEFT JOIN tasks t ON t.run_id = r.id
WHERE r.id = ANY($1::uuid[])
ORDER BY r.id, t.id
"""


async def load_runs(pool: Pool, run_ids: Sequence[str]) -> dict[str, StoredRun]:
    """The runs with all of their tasks, keyed by run id (unknown ids are absent)."""
    heads: dict[str, asyncpg.Record] = {}
    tasks: dict[str, list[StoredTask]] = {}
    for record in await pool.fetch(_LOAD_RUNS, list(run_ids)):
        run_id = record["run_id"]
        if run_id not in heads:
            heads[run_id], tasks[run_id] = record, []
        if record["task_id"] is not None:
            tasks[run_id].append(_stored_task(record))
    return {run_id: _stored_run(head, tasks[run_id]) for run_id, head in heads.items()}


def _stored_run(record: asyncpg.Record, tasks: list[StoredTask]) -> StoredRun:
    return StoredRun(
        id=record["run_id"],
        tenant=record["tenant"],
        target_kind=record["target_kind"],
        target_name=record["target_name"],
        target_version=record["target_version"],
        state=RunState(record["run_state"]),
        input=record["run_input"],
        last_seq=record["last_seq"],
        tasks=tuple(tasks),
    )


def _stored_task(record: asyncpg.Record) -> StoredTask:
    return StoredTask(
        id=record["task_id"],
        step=record["step"],
        tool_name=record["tool_name"],
        tool_version=record["tool_version"],
        queue=record["queue"],
        attempt=record["attempt"],
        state=TaskState(record["task_state"]),
        output=record["task_output"],
        error=record["task_error"],
        input=record["task_input"],
        element=record["element"],
        worker_id=record["worker_id"],
        started_at=record["started_at"],
    )


def _apply(returning: str, answer: str) -> Statement:
    """The statement that applies planned changes; its runs CTE ``r`` returns ``returning`` of each run it
    updated, and the statement answers ``answer`` of those."""

    def write(s: Statement) -> str:
        return f"""
WITH r AS (
    UPDATE runs SET state = u.state,
                    output = COALESCE(u.output::jsonb, runs.output),
                    error = COALESCE(u.error, runs.error),
                    last_seq = u.last_seq,
                    updated_at = now(),
                    finished_at = CASE WHEN u.state IN {one_of(FINAL_RUN_STATES)} THEN now() ELSE runs.finished_at END
    FROM {s.unnest(_RUN_UPDATES)}
    WHERE runs.id = u.id AND runs.last_seq = u.expected_seq
    RETURNING {returning}
), t AS (
    UPDATE tasks SET state = u.state,
                     output = u.output::jsonb,
                     error = u.error,
                     detail = u.detail::jsonb,
                     worker_id = u.worker_id,
                     started_at = to_timestamp(u.started_at),
                     finished_at = CASE WHEN u.next_attempt IS NULL AND u.state IN {one_of(FINAL_TASK_STATES)}
                                        THEN COALESCE(to_timestamp(u.finished_at), now()) END,
                     attempt = COALESCE(u.next_attempt, tasks.attempt),
                     published = tasks.published AND u.next_attempt IS NULL,
                     held = tasks.held AND u.state = {literal(TaskState.QUEUED)},
                     not_before = to_timestamp(u.not_before),
                     start_by = to_timestamp(u.start_by),
                     sandbox = u.sandbox,
                     cpu_seconds = u.cpu_seconds,
                     max_rss_kb = u.max_rss_kb,
                     queue_seconds = u.queue_seconds,
                     start_seconds = u.start_seconds,
                     run_seconds = u.run_seconds,
                     message_seq = u.message_seq
    FROM {s.unnest(_TASK_UPDATES)}
    WHERE tasks.id = u.id AND tasks.attempt = u.attempt AND u.run_id IN (SELECT id FROM r)
), n AS (
    {_insert_tasks(s)}
), e AS (
    {_insert_events(s)}
)
SELECT {answer} FROM r
"""

    return Statement(write)


_APPLY = _apply("runs.id", "id::text")
_APPLY_ANSWERING_ROW = _apply("runs.*", RUN_COLUMNS)


def _apply_args(
    statement: Statement,
    runs: Sequence[RunUpdate],
    task_updates: Sequence[TaskUpdate],
    new_tasks: Sequence[NewTask],
    events: Sequence[NewEvent],
) -> list[list[object]]:
    return statement.args(
        {
            _RUN_UPDATES: runs,
            _TASK_UPDATES: task_updates,
            _NEW_TASKS: new_tasks,
            _NEW_EVENTS: events,
        }
    )


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
    records = await pool.fetch(_APPLY.sql, *_apply_args(_APPLY, runs, task_updates, new_tasks, events))
    return {record["id"] for record in records}


async def apply_change(
    pool: Pool, run: RunUpdate, task_updates: Sequence[TaskUpdate], events: Sequence[NewEvent]
) -> RunRow | None:
    """Apply one run's change, planning no new task, as ``apply_changes`` does; returns the run as the change
    left it, or None if the run moved since it was loaded."""
    args = _apply_args(_APPLY_ANSWERING_ROW, [run], task_updates, [], events)
    record = await pool.fetchrow(_APPLY_ANSWERING_ROW.sql, *args)
    return None if record is None else run_row(record)


class LateTask(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    run_id: str
    attempt: int
    tool_name: str
    input: str


async def late_tasks(pool: Pool, limit: int) -> list[LateTask]:
    """Queued attempts that no worker started by their ``start_by``, and timers and signal waits now due."""
    records = await pool.fetch(
        "SELECT id::text AS id, tenant, run_id::text AS run_id, attempt, tool_name, input::text AS input FROM tasks"
        f" WHERE start_by < now() AND state = {literal(TaskState.QUEUED)} ORDER BY start_by LIMIT $1",
        limit,
    )
    return rows_of(LateTask, records)


class RunningTask(msgspec.Struct, frozen=True, kw_only=True):
    """An attempt a worker started and has not finished."""

    id: str
    run_id: str
    attempt: int
    message_seq: int | None


async def running_on(pool: Pool, tenant: str, worker_id: str) -> list[RunningTask]:
    """The attempts of ``tenant`` that worker ``worker_id`` started and has not finished, as recorded."""
    records = await pool.fetch(
        "SELECT id::text AS id, run_id::text AS run_id, attempt, message_seq FROM tasks"
        f" WHERE tenant = $1 AND worker_id = $2 AND state = {literal(TaskState.RUNNING)}",
        tenant,
        worker_id,
    )
    return rows_of(RunningTask, records)


async def mark_published(pool: Pool, task_ids: Sequence[str]) -> None:
    await pool.execute("UPDATE tasks SET published = true WHERE id = ANY($1::uuid[])", list(task_ids))


class PendingTask(msgspec.Struct, frozen=True, kw_only=True):
    """A recorded attempt to publish: the outbox's, or one released from being held."""

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
    records = await pool.fetch(
        "SELECT id::text AS id, tenant, run_id::text AS run_id, step, tool_name, tool_version, queue, attempt,"
        f" input::text AS input FROM tasks WHERE NOT published AND NOT held AND state = {literal(TaskState.QUEUED)}"
        " AND COALESCE(not_before, created_at) < now() - make_interval(secs => $1)"
        " ORDER BY created_at LIMIT $2",
        older_than_seconds,
        limit,
    )
    return rows_of(PendingTask, records)
