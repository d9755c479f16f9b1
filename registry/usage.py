"""Metered usage of the models: one row per usage key, what each call consumed and cost, and its sums.

The usage key of a run's model turn is its idempotency key (run, task, attempt, turn): however many times
the turn is delivered or replayed, its usage is one row (the primary key, ``ON CONFLICT DO NOTHING``). A
call outside any run is keyed by its own id.
"""

from datetime import datetime
from typing import Literal, get_args

import msgspec

from registry.db import Pool
from registry.statements import Columns, rows_of

GroupBy = Literal["day", "model", "tier", "run", "workflow", "agent"]
GROUPS: tuple[str, ...] = get_args(GroupBy)


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    tenant: str
    usage_key: str
    call_id: str
    run_id: str | None
    task_id: str | None
    caller: str
    requested: str
    tier: str | None
    deployment: str
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Spent(msgspec.Struct, frozen=True, kw_only=True):
    tokens: int = 0
    cost_usd: float = 0.0


class UsageGroup(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


USAGE = Columns(UsageRecord, call_id="uuid")
"""Written with the calls they meter (``registry.llm_calls.insert``)."""


async def spent(pool: Pool, tenant: str, *, since: datetime | None = None, run_id: str | None = None) -> Spent:
    """The tokens and cost metered for ``tenant`` since ``since``, or in run ``run_id`` (one of the two)."""
    where, value = ("run_id = $2", run_id) if run_id is not None else ("at >= $2", since)
    row = await pool.fetchrow(
        "SELECT coalesce(sum(input_tokens + output_tokens), 0)::int8 AS tokens,"
        f" coalesce(sum(cost_usd), 0)::float8 AS cost_usd FROM llm_usage WHERE tenant = $1 AND {where}",
        tenant,
        value,
    )
    return rows_of(Spent, [row])[0]


_KEYS: dict[str, str] = {
    "day": "to_char(date_trunc('day', u.at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')",
    "model": "u.deployment",
    "tier": "coalesce(u.tier, '-')",
    "run": "coalesce(u.run_id, '-')",
    "workflow": "coalesce(r.target_name, '-')",
    "agent": "u.caller",
}
assert set(_KEYS) == set(GROUPS)


async def grouped(
    pool: Pool, tenant: str, group_by: GroupBy, since: datetime | None, until: datetime | None
) -> list[UsageGroup]:
    """The tenant's usage in ``[since, until)`` summed per ``group_by``, the most costly first. ``workflow``
    is the workflow the call's run runs (``-``: a call outside any run, or a run of a tool)."""
    runs = (
        " LEFT JOIN runs r ON r.tenant = u.tenant AND r.id::text = u.run_id AND r.target_kind = 'workflow'"
        if group_by == "workflow"
        else ""
    )
    rows = await pool.fetch(
        f"SELECT {_KEYS[group_by]} AS key, count(*)::int AS calls, sum(u.input_tokens)::int8 AS input_tokens,"
        f" sum(u.output_tokens)::int8 AS output_tokens, sum(u.cost_usd)::float8 AS cost_usd"
        f" FROM llm_usage u{runs}"
        " WHERE u.tenant = $1 AND ($2::timestamptz IS NULL OR u.at >= $2) AND ($3::timestamptz IS NULL OR u.at < $3)"
        " GROUP BY 1 ORDER BY cost_usd DESC, key",
        tenant,
        since,
        until,
    )
    return rows_of(UsageGroup, rows)
