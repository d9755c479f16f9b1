"""The API's reads of runs, their tasks and their events: one run, a page of runs, a run's event log.

Nothing here is on the hot path, and nothing here writes; the orchestrator's own reads and every write
are in ``registry.runs``. Rows are mapped onto their records by column name, states decoded into
``bus.states``. A run's tasks come in id order (the order they were created), its events in ``seq``
order, and pages of runs newest first (ids are time-ordered, so the last id of a page is the cursor).
"""

from datetime import UTC, datetime, timedelta

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


MATCHES_COUNTED = 1000
"""A prefix's matches are counted up to this many (more: reported as this plus one), so that a short prefix
costs a bounded index scan."""

_LOWEST_ID = "00000000-0000-0000-0000-000000000000"
_HIGHEST_ID = "ffffffff-ffff-ffff-ffff-ffffffffffff"


class IdMatches(msgspec.Struct, frozen=True, kw_only=True):
    count: int
    """How many of the tenant's runs have an id with the prefix (at most ``MATCHES_COUNTED + 1``)."""
    id: str | None
    """The one run's id when exactly one matches."""


MATCH_RUN_IDS = (
    "SELECT count(*) AS count, CASE WHEN count(*) = 1 THEN min(id::text) END AS id FROM"
    " (SELECT id FROM runs WHERE tenant = $1 AND id BETWEEN $2::uuid AND $3::uuid LIMIT $4) AS matches"
)
"""A UUID's order is its bytes', so the ids that start with a prefix are one range, read off the ``(tenant,
id)`` index (never by comparing ids as text, which no index serves); its parameters are ``id_range``'s."""


def id_range(tenant: str, prefix: str) -> tuple[str, str, str, int]:
    """The parameters of ``MATCH_RUN_IDS``: the lowest and the highest id that start with ``prefix``."""
    return tenant, prefix + _LOWEST_ID[len(prefix) :], prefix + _HIGHEST_ID[len(prefix) :], MATCHES_COUNTED + 1


async def match_run_ids(pool: Pool, tenant: str, prefix: str) -> IdMatches:
    """The tenant's runs whose id starts with ``prefix``, a prefix of an id in canonical form (lower-case hex
    and dashes where a UUID has them; the caller checks)."""
    record = await pool.fetchrow(MATCH_RUN_IDS, *id_range(tenant, prefix))
    assert record is not None  # an aggregate answers one row
    return IdMatches(count=record["count"], id=record["id"])


SINCE_SKEW = timedelta(minutes=1)
"""How much earlier than its row's ``created_at`` a run's id may say it was made: the id is made before the
commit, on a control plane's clock, and ``created_at`` is the database's commit time."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _id_floor(since: datetime) -> str:
    """The lowest id of a run created at ``since`` or later, SINCE_SKEW allowed for: run ids begin with their
    creation time in milliseconds since the epoch (48 bits: the UUIDv7 layout, control_plane/engine/ids.py)."""
    millis = (since - _EPOCH - SINCE_SKEW) // timedelta(milliseconds=1)
    digits = f"{min(max(millis, 0), 2**48 - 1):012x}"
    return f"{digits[:8]}-{digits[8:]}{_LOWEST_ID[13:]}"


async def list_runs(
    pool: Pool,
    tenant: str,
    *,
    state: RunState | None,
    before_id: str | None,
    limit: int,
    workflow: str | None = None,
    version: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[RunRow]:
    """Newest first; ``before_id`` is the cursor (ids are time-ordered). ``workflow`` (and ``version``) keep
    the runs of that workflow (version); ``since`` those created at or after it, as a range of the id index
    too (widened by SINCE_SKEW, then cut by ``created_at``): the scan stops at ``since``, whatever the tenant
    ran before; ``until`` those created before it."""
    records = await pool.fetch(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE tenant = $1"
        " AND ($2::text IS NULL OR state = $2) AND ($3::uuid IS NULL OR id < $3::uuid)"
        " AND ($5::text IS NULL OR (target_kind = 'workflow' AND target_name = $5))"
        " AND ($6::text IS NULL OR target_version = $6)"
        " AND ($7::timestamptz IS NULL OR created_at >= $7) AND id >= $8::uuid"
        " AND ($9::timestamptz IS NULL OR created_at < $9)"
        " ORDER BY id DESC LIMIT $4",
        tenant,
        state,
        before_id,
        limit,
        workflow,
        version,
        since,
        _LOWEST_ID if since is None else _id_floor(since),
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
