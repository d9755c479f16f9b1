"""Step instances as tasks: what a planned Start becomes, and what a timer or a signal wait that comes due
turns into.

A tool call is a task a worker runs (recorded, then dispatched). Timers, signal waits and agent steps' own
instances are tasks the control plane keeps itself: recorded as published (the outbox never sends them),
with ``start_by`` set to when they come due, so the same durable watcher that enforces schedule-to-start
fires them after any restart (an agent step's is never due: its loop settles it).
"""

import time
from dataclasses import dataclass
from typing import Any

import msgspec

from bus.messages import Result, encode, json_text
from bus.states import TaskState
from control_plane.catalog.resolver import (
    BUILTIN_AGENT,
    BUILTIN_PLAN,
    BUILTIN_RECORD,
    BUILTIN_SIGNAL,
    BUILTIN_SLEEP,
    BUILTIN_VERSION,
    Tool,
)
from control_plane.engine.dispatch import CONTROL_PLANE, Dispatch
from control_plane.engine.ids import new_id
from control_plane.engine.working import WorkingTask
from control_plane.planning import AwaitSignal, Record, RunAgent, RunPlan, Sleep, Start, ToolCall
from registry import runs


@dataclass(frozen=True, slots=True, kw_only=True)
class Planned:
    """A started step instance: its task row, its dispatch (None when the control plane keeps it) and the
    event that announces it."""

    task: runs.NewTask
    dispatch: Dispatch | None
    event: str
    data: dict[str, Any]


def plan_instance(tenant: str, run_id: str, start: Start, tool: Tool | None, now: float) -> Planned:
    """The task for ``start``; ``tool`` is the tool of a ToolCall (None for timers and signal waits)."""
    task_id = new_id()
    element = None if start.step == start.key else start.step
    data: dict[str, Any] = {"task_id": task_id, "step": start.key}
    action = start.action
    if isinstance(action, ToolCall):
        assert tool is not None, "a tool call comes with its tool"
        input_json = json_text(action.input)
        task = runs.NewTask(
            id=task_id,
            tenant=tenant,
            run_id=run_id,
            step=start.key,
            tool_name=tool.name,
            tool_version=tool.version,
            queue=action.queue,
            input=input_json,
            start_by=tool.start_by(now),
            element=element,
        )
        return Planned(
            task=task,
            dispatch=Dispatch.of(task, tool, tenant=tenant, run_id=run_id, attempt=1),
            event="task.queued",
            data={**data, "tool": tool.ref, "attempt": 1},
        )
    detail: dict[str, Any]
    due: float | None
    state, output = TaskState.QUEUED, None
    if isinstance(action, Sleep):
        name, detail, due = BUILTIN_SLEEP, {"seconds": action.seconds}, now + action.seconds
        event = "timer.started"
    elif isinstance(action, RunAgent):
        # Settled by the planning of its loop (agent_steps), never by a timer or a worker.
        name, detail, due, event = BUILTIN_AGENT, action.input_record(), None, "agent.started"
    elif isinstance(action, RunPlan):
        # Settled by the planning of its plan (planner), like an agent step.
        name, detail, due, event = BUILTIN_PLAN, action.input_record(), None, "plan.started"
    elif isinstance(action, Record):
        name, detail, due, event = BUILTIN_RECORD, {}, None, "plan.recorded"
        state, output = TaskState.SUCCEEDED, json_text(action.output)
    else:
        assert isinstance(action, AwaitSignal)
        name, detail = BUILTIN_SIGNAL, {"signals": list(action.signals), "timeout_seconds": action.timeout_seconds}
        due = None if action.timeout_seconds is None else now + action.timeout_seconds
        event = "signal.waiting"
    task = runs.NewTask(
        id=task_id,
        tenant=tenant,
        run_id=run_id,
        step=start.key,
        tool_name=name,
        tool_version=BUILTIN_VERSION,
        queue=CONTROL_PLANE,
        input=json_text(detail),
        start_by=due,
        element=element,
        published=True,
        state=state,
        output=output,
    )
    shown = {"plan": action.output} if isinstance(action, Record) else detail
    return Planned(task=task, dispatch=None, event=event, data={**data, **shown})


class _Waiting(msgspec.Struct, frozen=True):
    signals: list[str] = []


def waits_for(task: WorkingTask, signal: str) -> bool:
    """Whether ``task`` is a signal wait still waiting for ``signal``."""
    return (
        task.tool_name == BUILTIN_SIGNAL
        and task.state == TaskState.QUEUED
        and signal in msgspec.json.decode(task.input, type=_Waiting).signals
    )


def signal_result(tenant: str, run_id: str, task: WorkingTask, signal: str, data: Any) -> Result:
    """The result that ends the wait of ``task`` with ``signal``."""
    now = time.time()
    return Result(
        tenant=tenant,
        run_id=run_id,
        task_id=task.id,
        attempt=task.attempt,
        ok=True,
        output=msgspec.Raw(encode({"signal": signal, "data": data})),
        worker_id=CONTROL_PLANE,
        sandbox="none",
        started_at=now,
        finished_at=now,
    )


def due_result(task: runs.LateTask) -> Result:
    """The result of a task past its ``start_by``: a timer has run out, a signal wait or an attempt no worker
    started in time has timed out."""
    now = time.time()
    ok, output = False, msgspec.Raw(b"null")
    error: str | None = "no worker started it in time (schedule-to-start timeout)"
    if task.tool_name == BUILTIN_SLEEP:
        seconds = msgspec.json.decode(task.input)["seconds"]
        ok, output, error = True, msgspec.Raw(encode({"slept_seconds": seconds})), None
    elif task.tool_name == BUILTIN_SIGNAL:
        signals = ", ".join(msgspec.json.decode(task.input, type=_Waiting).signals)
        error = f"timed out waiting for a signal ({signals})"
    return Result(
        tenant=task.tenant,
        run_id=task.run_id,
        task_id=task.id,
        attempt=task.attempt,
        ok=ok,
        output=output,
        error=error,
        error_kind=None if ok else "timeout",
        worker_id=CONTROL_PLANE,
        sandbox="none",
        started_at=now,
        finished_at=now,
    )
