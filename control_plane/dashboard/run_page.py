"""A run's page: its workflow as a live graph (an agent's run: its turns and tool calls), a node's tasks (input,
output, error, logs, sandbox figures, tokens), an agent's conversation (the run's, or an agent step's in its
node), the events timeline, and the actions cancel, signal and re-run."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bus import subjects
from bus.states import FINAL_RUN_STATES
from control_plane.api.run_routes import event_stream
from control_plane.dashboard import graph
from control_plane.dashboard.rendering import flash, fragment, is_fragment, page
from control_plane.dashboard.session import ApiRefusal, Session

Form = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
FINAL_EVENTS = " ".join(sorted(f"run.{state}" for state in FINAL_RUN_STATES))


def _checked(run_id: str) -> str:
    # Anything but a UUID names no run; the API would answer 404 as well, without a round trip here.
    if subjects.ID_RE.fullmatch(run_id) is None:
        raise ApiRefusal(404, "not-found", f"no run {run_id}", "id")
    return run_id


def _target(run: dict[str, Any]) -> tuple[str, str, str]:
    """(``workflow``, ``agent`` or ``tool``, name, version) of what the run runs."""
    kind = next(key for key in ("workflow", "agent", "tool") if run.get(key))
    name, _, version = str(run[kind]).partition("@")
    return kind, name, version


async def _document(session: Session, run: dict[str, Any]) -> dict[str, Any]:
    """The workflow document the run follows; a tool run is a one-node DAG of its tool, an agent's run a loop
    drawn from its tasks."""
    kind, name, version = _target(run)
    if kind == "tool":
        return {"kind": "dag", "steps": [{"name": name, "tool": f"{name}@{version}"}]}
    if kind == "agent":
        return {"kind": "agent"}
    spec: dict[str, Any] = (await session.get(f"/v1/workflows/{name}/versions/{version}"))["spec"]
    return spec


def _tool_run_tasks(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool run's tasks named by the tool, the one node of its graph."""
    kind, name, _ = _target(run)
    tasks: list[dict[str, Any]] = run.get("tasks") or []
    return [{**task, "element": name} for task in tasks] if kind == "tool" else tasks


APPROVE = "approve"
"""The signal that answers an agent's call waiting for approval (``af signal RUN approve``)."""


def _signals(document: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Every signal the workflow's waits take, the run waits for now, and an agent's approvals, for the form."""
    found = {str(s) for wait in run.get("waiting") or [] for s in wait.get("signals") or []}
    if document.get("kind") == "agent":
        found.add(APPROVE)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("wait", "wait_signal") and isinstance(value, dict):
                    found.update(str(s) for s in value.get("signals") or [])
                elif key == "agent":
                    found.add(APPROVE)
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(document.get("states") or document.get("root") or document.get("steps") or {})
    return sorted(found)


async def _drawn(session: Session, run_id: str) -> dict[str, Any]:
    """The run, its document and its graph."""
    run = await session.get(f"/v1/runs/{run_id}")
    document = await _document(session, run)
    return {"run": run, "document": document, "graph": graph.layout(document, _tool_run_tasks(run), run["state"])}


async def _live_context(session: Session, run_id: str) -> dict[str, Any]:
    """What the run's events change on its page: its state, its graph, an agent's conversation."""
    context = await _drawn(session, run_id)
    agent = context["run"].get("agent")
    context["conversation"] = await session.get(f"/v1/runs/{run_id}/transcript") if agent else None
    return context


@get("/runs/{run_id:str}")
async def run_detail(
    request: Request[Any, Any, Any], run_id: str, session: Session, node: str | None = None
) -> Response[str]:
    context = await _live_context(session, _checked(run_id))
    run = context["run"]
    final = run["state"] in FINAL_RUN_STATES
    context |= {
        "final_events": FINAL_EVENTS,
        "signals": _signals(context["document"], run),
        "can_cancel": not final and await session.may("runs", "cancel"),
        "can_signal": not final and await session.may("runs", "signal"),
        "can_rerun": await session.may("runs", "write"),
        "node": await _node_context(session, run, context["graph"], node) if node else None,
    }
    return await page(session, "run.html", title=f"Run {run_id}", active="/ui/runs", **context)


@get("/runs/{run_id:str}/live")
async def run_live(run_id: str, session: Session) -> Response[str]:
    """The parts of the run's page that its events change: its state and its graph."""
    return fragment(session, "run_live.html", **await _live_context(session, _checked(run_id)))


@get("/runs/{run_id:str}/events")
async def run_events(
    run_id: str,
    session: Session,
    last_event_id: Annotated[str | None, Parameter(header="Last-Event-ID", required=False)] = None,
) -> ServerSentEvent:
    """The run's events for the page's script, with what its tools write to stderr while they run, read as the
    user (runs:read) and sent unnamed, so that one handler takes every type (each says its own); a reconnecting
    browser resumes after the last event it had."""
    await session.get(f"/v1/runs/{_checked(run_id)}")
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0

    async def unnamed() -> AsyncIterator[ServerSentEventMessage]:
        async for message in event_stream(session.services, session.identity.tenant, run_id, after, True):
            # Keep-alive comments pass as they are; events lose their name.
            yield message if message.comment else ServerSentEventMessage(data=message.data, id=message.id)

    return ServerSentEvent(unnamed())


async def _node_context(session: Session, run: dict[str, Any], drawn: graph.Graph, name: str) -> dict[str, Any]:
    """A node's tasks, and for an agent step the conversation of its loop."""
    tasks = [t for t in _tool_run_tasks(run) if t["element"] == name]
    agent_step = any(n.name == name and n.kind == "agent" for n in drawn.nodes)
    conversation = None
    if agent_step and any(t["step"] == name for t in tasks):
        conversation = await session.get(f"/v1/runs/{run['id']}/transcript", step=name)
    return {"name": name, "tasks": list(reversed(tasks)), "run_id": run["id"], "conversation": conversation}


@get("/runs/{run_id:str}/nodes/{name:str}")
async def run_node(run_id: str, name: str, session: Session) -> Response[str]:
    """A node's tasks, newest first: each attempt's input, output, error, logs, sandbox and tokens; an agent
    step's conversation above them."""
    context = await _drawn(session, _checked(run_id))
    node = await _node_context(session, context["run"], context["graph"], name)
    return fragment(session, "node.html", node=node)


async def _act(session: Session, path: str, document: Any, done: str) -> Response[str]:
    try:
        await session.post(path, document)
    except ApiRefusal as refusal:
        return flash(session, refusal.detail, tone="error", status=refusal.status)
    return flash(session, done, headers={"HX-Trigger": "run-changed"})


@post("/runs/{run_id:str}/cancel")
async def cancel(run_id: str, session: Session) -> Response[str]:
    return await _act(session, f"/v1/runs/{_checked(run_id)}/cancel", None, "Cancelled the run.")


@post("/runs/{run_id:str}/signal")
async def signal(run_id: str, data: Form, session: Session) -> Response[str]:
    """Send the signal named in the form, with its data (JSON; empty for none)."""
    text = data.get("data", "").strip()
    try:
        payload = msgspec.json.decode(text) if text else None
    except msgspec.DecodeError as error:
        return flash(session, f"The data is not JSON: {error}", tone="error", status=422)
    name = data.get("name", "").strip()
    document = {"name": name, "data": payload}
    return await _act(session, f"/v1/runs/{_checked(run_id)}/signal", document, f"Sent signal {name}.")


@post("/runs/{run_id:str}/rerun")
async def rerun(request: Request[Any, Any, Any], run_id: str, session: Session) -> Response[str]:
    """Start the same workflow (or tool) version again with the same input; the browser goes to the new run."""
    run = await session.get(f"/v1/runs/{_checked(run_id)}")
    kind, name, version = _target(run)
    try:
        started = await session.post("/v1/runs", {kind: f"{name}@{version}", "input": run["input"]})
    except ApiRefusal as refusal:
        return flash(session, refusal.detail, tone="error", status=refusal.status)
    where = f"/ui/runs/{started['id']}"
    if is_fragment(request):
        return flash(session, f"Started run {started['id']}.", headers={"HX-Redirect": where})
    return flash(session, f"Started run {started['id']}.", status=303, headers={"Location": where})


ROUTES = [run_detail, run_live, run_events, run_node, cancel, signal, rerun]
