"""Budgets: a model call is refused (``budget-exceeded``) once its tenant has spent its monthly tokens or
cost, or its run its own.

The check comes before the call, against what was spent so far: the call that crosses a limit is answered,
the next one is refused. What was spent is read from the metered usage (``registry.usage``) at most every
``TTL_SECONDS`` per tenant and per run, and what this control plane meters in between is added at once:
another control plane's calls count within that time.
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from control_plane import metrics
from control_plane.errors import BudgetExceeded
from registry import budgets, usage
from registry.budgets import Budget
from registry.db import Pool
from registry.usage import Spent

TTL_SECONDS = 2.0
_MAX_RUNS = 10_000
"""Runs whose spending is kept in memory; the oldest read is forgotten first."""


@dataclass(slots=True)
class Spending:
    """What a month (or a run) has spent: as last read from the metered usage, and metered here since."""

    period: str
    """The month (``2026-12``), or the run, the sums are of."""
    read: Spent
    added_tokens: int = 0
    added_cost: float = 0.0
    read_at: float = field(default_factory=time.monotonic)

    @property
    def tokens(self) -> int:
        return self.read.tokens + self.added_tokens

    @property
    def cost_usd(self) -> float:
        return self.read.cost_usd + self.added_cost


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(now: datetime) -> datetime:
    start = _month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


class Budgets:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._limits: dict[str, tuple[Budget, float]] = {}
        self._months: dict[str, Spending] = {}
        self._runs: dict[tuple[str, str], Spending] = {}

    async def limits(self, tenant: str) -> Budget:
        cached = self._limits.get(tenant)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        budget = await budgets.get(self._pool, tenant)
        self._limits[tenant] = (budget, time.monotonic() + TTL_SECONDS)
        return budget

    async def set(self, tenant: str, budget: Budget) -> None:
        await budgets.put(self._pool, tenant, budget)
        self._limits.pop(tenant, None)

    async def this_month(self, tenant: str) -> Spending:
        now = datetime.now(UTC)
        month = now.strftime("%Y-%m")
        tally = self._months.get(tenant)
        if tally is None or tally.period != month or time.monotonic() - tally.read_at > TTL_SECONDS:
            spent = await usage.spent(self._pool, tenant, since=_month_start(now))
            tally = self._months[tenant] = Spending(month, spent)
        return tally

    async def _of_run(self, tenant: str, run_id: str) -> Spending:
        tally = self._runs.get((tenant, run_id))
        if tally is None or time.monotonic() - tally.read_at > TTL_SECONDS:
            if len(self._runs) >= _MAX_RUNS:
                del self._runs[next(iter(self._runs))]
            self._runs.pop((tenant, run_id), None)
            tally = Spending(run_id, await usage.spent(self._pool, tenant, run_id=run_id))
            self._runs[(tenant, run_id)] = tally
        return tally

    async def check(self, tenant: str, run_id: str | None) -> None:
        """Refuse a call of ``tenant`` (in ``run_id``) whose budget is spent."""
        budget = await self.limits(tenant)
        if budget.monthly_tokens is not None or budget.monthly_cost_usd is not None:
            month = await self.this_month(tenant)
            _refuse(tenant, "monthly_tokens", budget.monthly_tokens, month.tokens, f"month {month.period}")
            _refuse(tenant, "monthly_cost_usd", budget.monthly_cost_usd, month.cost_usd, f"month {month.period}")
        if run_id is not None and (budget.run_tokens is not None or budget.run_cost_usd is not None):
            run = await self._of_run(tenant, run_id)
            _refuse(tenant, "run_tokens", budget.run_tokens, run.tokens, f"run {run_id}")
            _refuse(tenant, "run_cost_usd", budget.run_cost_usd, run.cost_usd, f"run {run_id}")

    def spent(self, tenant: str, run_id: str | None, tokens: int, cost_usd: float) -> None:
        """Count a call metered here at once, before its usage row is read back."""
        tallies = [self._months.get(tenant)]
        if run_id is not None:
            tallies.append(self._runs.get((tenant, run_id)))
        for tally in tallies:
            if tally is not None:
                tally.added_tokens += tokens
                tally.added_cost += cost_usd


def _refuse(tenant: str, budget: str, limit: float | None, spent: float, period: str) -> None:
    if limit is None or spent < limit:
        return
    metrics.LLM_BUDGET_REFUSALS.add((tenant, budget))
    what = "tokens" if budget.endswith("tokens") else "USD"
    detail = f"{budget}: {period} has spent {spent:.6g} {what} of {limit:.6g}"
    now = datetime.now(UTC)
    retry_after = (_next_month(now) - now).total_seconds() if budget.startswith("monthly") else None
    raise BudgetExceeded("budget-exceeded", detail, budget, retry_after=retry_after)
