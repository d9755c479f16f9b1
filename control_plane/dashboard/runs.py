"""The runs page: filters (state, workflow, creation time), a search by id, cursor pages, and bulk cancel with a
confirmation shown in the page first."""

import contextlib
import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter

from bus.states import FINAL_RUN_STATES, RunState
from control_plane.dashboard.rendering import flash, fragment, is_fragment, page
from control_plane.dashboard.session import ApiRefusal, Session

PAGE_SIZE = 25
_ID_TEXT = re.compile(r"[0-9a-fA-F-]{1,36}")
# Bulk forms send the field once per checked run.
ListForm = Annotated[dict[str, str | list[str]], Body(media_type=RequestEncodingType.URL_ENCODED)]


def _utc(value: str | None) -> str | None:
    """A datetime-local field's value (read as UTC) as the API's ISO 8601."""
    if not value:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC).isoformat()


def picked(data: dict[str, str | list[str]]) -> list[str]:
    value = data.get("run", [])
    return [value] if isinstance(value, str) else list(value)


@get("/runs")
async def runs_page(
    request: Request[Any, Any, Any],
    session: Session,
    run_state: Annotated[str | None, Parameter(query="state", required=False)] = None,
    workflow: str | None = None,
    since: str | None = None,
    until: str | None = None,
    q: str | None = None,
    cursor: str | None = None,
) -> Response[str]:
    filters = {"state": run_state, "workflow": workflow, "since": since, "until": until, "q": (q or "").strip()}
    runs: list[dict[str, Any]] = []
    next_cursor, refusal = None, None
    try:
        if filters["q"]:
            # The API takes a run's id or the start of one (409 when it starts several runs' ids).
            if _ID_TEXT.fullmatch(filters["q"]) is None:
                raise ApiRefusal(422, "validation-error", "a run id is hexadecimal digits and dashes", "q")
            try:
                runs = [await session.get(f"/v1/runs/{filters['q']}")]
            except ApiRefusal as refused:
                if refused.status != 404:
                    raise
        else:
            answer = await session.get(
                "/v1/runs",
                state=run_state,
                workflow=workflow,
                since=_utc(since),
                until=_utc(until),
                cursor=cursor,
                limit=PAGE_SIZE,
            )
            runs, next_cursor = answer["items"], answer["next_cursor"]
    except (ApiRefusal, ValueError) as error:
        refusal = error if isinstance(error, ApiRefusal) else ApiRefusal(422, "validation-error", str(error))
    context: dict[str, Any] = {
        "runs": runs,
        "next_cursor": next_cursor,
        "next_query": urlencode({**{k: v for k, v in filters.items() if v}, "cursor": next_cursor or ""}),
        "refusal": refusal,
        "filters": filters,
        "final_states": [str(s) for s in FINAL_RUN_STATES],
        "can_cancel": await session.may("runs", "cancel"),
    }
    if is_fragment(request):
        return fragment(session, "runs_table.html", **context)
    workflows: list[dict[str, Any]] = []
    with contextlib.suppress(ApiRefusal):  # a role that may not read workflows filters by none
        workflows = (await session.get("/v1/workflows"))["items"]
    return await page(
        session,
        "runs.html",
        title="Runs",
        active="/ui/runs",
        states=[str(s) for s in RunState],
        workflows=sorted(w["name"] for w in workflows),
        **context,
    )


@post("/runs/cancel/confirm")
async def confirm_bulk_cancel(data: ListForm, session: Session) -> Response[str]:
    """The confirmation of a bulk cancel, in the page's flash region: which runs, and a button to go on."""
    runs = picked(data)
    if not runs:
        return flash(session, "Select the runs to cancel first.", tone="error")
    return fragment(session, "bulk_confirm.html", runs=runs)


@post("/runs/cancel")
async def bulk_cancel(data: ListForm, session: Session) -> Response[str]:
    """Cancel each run through the API (each refusal is listed); the runs table reloads."""
    cancelled, refused = 0, []
    for run_id in picked(data):
        try:
            await session.post(f"/v1/runs/{run_id}/cancel")
            cancelled += 1
        except ApiRefusal as refusal:
            if refusal.status in (401, 403):
                return flash(session, refusal.detail, tone="error", status=refusal.status)
            refused.append(f"{run_id}: {refusal.detail}")
    message = f"Cancelled {cancelled} run{'s' if cancelled != 1 else ''}."
    return flash(
        session, message, tone="error" if refused else "ok", details=refused, headers={"HX-Trigger": "runs-changed"}
    )


ROUTES = [runs_page, confirm_bulk_cancel, bulk_cancel]
