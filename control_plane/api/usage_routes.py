"""Routes of metering: the tenant's model usage summed by day, model, tier, run, workflow or agent, and its
budgets (with what this month has spent of them)."""

from datetime import UTC, date, datetime
from typing import Any

import msgspec
from litestar import Request, Response, get, put

from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.errors import Invalid
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import usage
from registry.budgets import Budget
from registry.usage import GroupBy


def _instant(value: str | None, field: str) -> datetime | None:
    """An ISO 8601 date (midnight UTC) or date and time (UTC unless it names its offset)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if "T" in value or " " in value else None
        if moment is None:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day)
    except ValueError:
        raise Invalid("validation-error", f"{value!r} is not an ISO 8601 date or date and time", field) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@get("/v1/usage", opt={"permission": ("usage", "read")})
async def get_usage(
    services: Services,
    identity: Identity,
    group_by: GroupBy = "model",
    since: str | None = None,
    until: str | None = None,
) -> Response[bytes]:
    """The tenant's metered model usage in ``[since, until)``, summed per ``group_by`` (day, model, tier, run,
    workflow, agent), the most costly first, and in total."""
    start, end = _instant(since, "since"), _instant(until, "until")
    if start is not None and end is not None and end <= start:
        raise Invalid("validation-error", "until must come after since", "until")
    groups = await usage.grouped(services.pool, identity.tenant, group_by, start, end)
    total = {
        "calls": sum(g.calls for g in groups),
        "input_tokens": sum(g.input_tokens for g in groups),
        "output_tokens": sum(g.output_tokens for g in groups),
        "cost_usd": sum(g.cost_usd for g in groups),
    }
    return _json(
        {
            "group_by": group_by,
            "since": start.isoformat() if start else None,
            "until": end.isoformat() if end else None,
            "items": groups,
            "total": total,
        }
    )


async def _budget_view(services: Services, tenant: str) -> dict[str, Any]:
    month = await services.gateway.budgets.this_month(tenant)
    return {
        **msgspec.to_builtins(await services.gateway.budgets.limits(tenant)),
        "month": {"period": month.period, "tokens": month.tokens, "cost_usd": month.cost_usd},
    }


@get("/v1/budgets", opt={"permission": ("usage", "read")})
async def get_budgets(services: Services, identity: Identity) -> Response[bytes]:
    """The tenant's budgets (``null``: no limit) and what this month has spent."""
    return _json(await _budget_view(services, identity.tenant))


@put("/v1/budgets", opt={"permission": ("budgets", "write")})
async def put_budgets(
    request: Request[Any, Any, Any], data: Budget, services: Services, identity: Identity
) -> Response[bytes]:
    """Replace the tenant's budgets: a limit left out is no limit."""
    await services.gateway.budgets.set(identity.tenant, data)
    limits = ", ".join(f"{k}={v}" for k, v in msgspec.to_builtins(data).items()) or "none"
    await _audit(request, services, identity, "budgets.set", limits, "updated")
    return _json(await _budget_view(services, identity.tenant))


ROUTES = [get_usage, get_budgets, put_budgets]
