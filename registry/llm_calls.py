"""Model calls: one row per call through the gateway, with every attempt it made, written in batches
together with their metered usage (``registry.usage``).

A call with an idempotency key (a run's model turn) is found again by it: the response of its successful
call is what a redelivered turn is answered with, so the model is not called twice for one turn. While
one is called, its key is leased (``llm_call_leases``) to the control plane calling it, so that another
asked for the same turn at once waits for that answer instead of calling the model too.
"""

from collections.abc import Sequence
from datetime import datetime

import msgspec

from registry import usage
from registry.db import Pool
from registry.statements import Columns, Statement, rows_of
from registry.usage import UsageRecord


class LlmCall(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    run_id: str | None
    task_id: str | None
    attempt: int
    turn: int | None
    caller: str
    idempotency_key: str | None
    requested: str
    """The tier or model the caller named."""
    tier: str | None
    deployment: str | None
    """The deployment that answered (or the last one tried)."""
    outcome: str
    """``ok``, or the error's kind (``no-healthy-deployment``, ``provider-error``, ``stream-interrupted``…)."""
    error: str | None
    attempts: str
    """JSON: every attempt, in order: deployment, outcome, error, status, latency, Retry-After."""
    stream: bool
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    cost_usd: float
    """What the answering deployment charges for the tokens, at its prices."""
    record: str
    prompt: str | None
    """JSON: the messages (``record = full``) or their shape (``metadata``)."""
    response: str | None
    """JSON: the completion answered (kept under ``metadata`` too when the call has an idempotency key: a
    redelivered turn is answered with it)."""


class StoredCall(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    tenant: str
    run_id: str | None
    task_id: str | None
    attempt: int
    turn: int | None
    caller: str
    requested: str
    tier: str | None
    deployment: str | None
    outcome: str
    error: str | None
    attempts: str
    stream: bool
    latency_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    tokens_estimated: bool
    cost_usd: float
    record: str
    prompt: str | None
    response: str | None
    at: datetime


_CALLS = Columns(LlmCall, id="uuid", attempts="jsonb", prompt="jsonb", response="jsonb")


def _insert(s: Statement) -> str:
    calls, metered = ", ".join(_CALLS.types), ", ".join(usage.USAGE.types)
    return (
        f"WITH calls AS (INSERT INTO llm_calls ({calls}) SELECT {calls} FROM {s.unnest(_CALLS)})"
        f" INSERT INTO llm_usage ({metered}) SELECT {metered} FROM {s.unnest(usage.USAGE)}"
        " ON CONFLICT (tenant, usage_key) DO NOTHING"
    )


_INSERT = Statement(_insert)


async def insert(pool: Pool, calls: Sequence[LlmCall], metered: Sequence[UsageRecord] = ()) -> None:
    """Record a batch of calls and meter their usage, in one statement; a usage key metered already (a
    redelivered turn) is left as it was."""
    await pool.execute(_INSERT.sql, *_INSERT.args({_CALLS: calls, usage.USAGE: metered}))


async def replay(pool: Pool, tenant: str, idempotency_key: str) -> str | None:
    """The response (JSON text) of the first successful call recorded with this key, if any."""
    value = await pool.fetchval(
        "SELECT response::text FROM llm_calls WHERE tenant = $1 AND idempotency_key = $2 AND outcome = 'ok'"
        " AND response IS NOT NULL ORDER BY at LIMIT 1",
        tenant,
        idempotency_key,
    )
    return None if value is None else str(value)


_TAKE = (
    "WITH taken AS ("
    " INSERT INTO llm_call_leases (tenant, idempotency_key, holder, expires_at)"
    " VALUES ($1, $2, $3, now() + make_interval(secs => $4))"
    " ON CONFLICT (tenant, idempotency_key) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at"
    " WHERE llm_call_leases.holder = EXCLUDED.holder OR llm_call_leases.expires_at < now()"
    " RETURNING 1)"
    " SELECT EXISTS (SELECT 1 FROM taken) AS held, (SELECT response::text FROM llm_calls"
    " WHERE tenant = $1 AND idempotency_key = $2 AND outcome = 'ok' AND response IS NOT NULL"
    " ORDER BY at LIMIT 1) AS response"
)


async def take_lease(
    pool: Pool, tenant: str, idempotency_key: str, holder: str, seconds: float
) -> tuple[bool, str | None]:
    """Lease the key to ``holder`` for ``seconds`` unless another holds it unexpired (the holder renews its
    own); whether it holds it, and the response recorded for the key, if any (``replay``'s).

    One statement, so a turn's usual call costs one round trip here. Its read of the record may predate the
    lease's change, which is safe because a lease is released only after a call that recorded no answer:
    after a call that did, the lease stays until it runs out, so a delivery racing that call's end finds the
    lease held and reads again, and one taking the lease once it ran out reads a record committed long before.
    """
    row = await pool.fetchrow(_TAKE, tenant, idempotency_key, holder, seconds)
    assert row is not None
    response = row["response"]
    return bool(row["held"]), None if response is None else str(response)


async def release_lease(pool: Pool, tenant: str, idempotency_key: str, holder: str) -> None:
    """Give the key's lease up (its call recorded no answer): the next delivery of the turn calls the model."""
    await pool.execute(
        "DELETE FROM llm_call_leases WHERE tenant = $1 AND idempotency_key = $2 AND holder = $3",
        tenant,
        idempotency_key,
        holder,
    )


async def sweep_leases(pool: Pool, older_than_seconds: float) -> int:
    """Delete the leases that ran out more than ``older_than_seconds`` ago; how many."""
    deleted = await pool.fetchval(
        "WITH gone AS (DELETE FROM llm_call_leases WHERE expires_at < now() - make_interval(secs => $1) RETURNING 1)"
        " SELECT count(*) FROM gone",
        older_than_seconds,
    )
    return int(deleted or 0)


_READ = (
    "id::text AS id, tenant, run_id, task_id, attempt, turn, caller, requested, tier, deployment, outcome, error,"
    " attempts::text AS attempts, stream, latency_ms, ttft_ms, input_tokens, output_tokens, tokens_estimated,"
    " cost_usd, record, prompt::text AS prompt, response::text AS response, at"
)


async def recent(pool: Pool, tenant: str, *, run_id: str | None = None, limit: int = 100) -> list[StoredCall]:
    """The tenant's calls, newest first; only a run's, oldest first, when ``run_id`` is given."""
    if run_id is not None:
        rows = await pool.fetch(
            f"SELECT {_READ} FROM llm_calls WHERE tenant = $1 AND run_id = $2 ORDER BY at LIMIT $3",
            tenant,
            run_id,
            limit,
        )
    else:
        rows = await pool.fetch(
            f"SELECT {_READ} FROM llm_calls WHERE tenant = $1 ORDER BY at DESC LIMIT $2", tenant, limit
        )
    return rows_of(StoredCall, rows)
