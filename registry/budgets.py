"""Each tenant's budgets for model calls: tokens and cost per calendar month (UTC), and per run."""

from typing import Annotated

import msgspec

from registry.db import Pool
from registry.statements import rows_of

Tokens = Annotated[int, msgspec.Meta(ge=0, le=10**15)]
Dollars = Annotated[float, msgspec.Meta(ge=0, le=10**9)]


class Budget(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A tenant's limits; ``None``: no limit."""

    monthly_tokens: Tokens | None = None
    monthly_cost_usd: Dollars | None = None
    run_tokens: Tokens | None = None
    """Input and output tokens of one run's model calls together."""
    run_cost_usd: Dollars | None = None


_FIELDS = ", ".join(f.name for f in msgspec.structs.fields(Budget))


async def get(pool: Pool, tenant: str) -> Budget:
    row = await pool.fetchrow(f"SELECT {_FIELDS} FROM llm_budgets WHERE tenant = $1", tenant)
    return Budget() if row is None else rows_of(Budget, [row])[0]


async def put(pool: Pool, tenant: str, budget: Budget) -> None:
    await pool.execute(
        f"INSERT INTO llm_budgets (tenant, {_FIELDS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant) DO UPDATE"
        " SET monthly_tokens = excluded.monthly_tokens, monthly_cost_usd = excluded.monthly_cost_usd,"
        " run_tokens = excluded.run_tokens, run_cost_usd = excluded.run_cost_usd, updated_at = now()",
        tenant,
        budget.monthly_tokens,
        budget.monthly_cost_usd,
        budget.run_tokens,
        budget.run_cost_usd,
    )
