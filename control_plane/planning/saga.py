"""Compensation (the saga pattern), the same for every kind of workflow.

When a run's plan fails, every step instance that succeeded and whose element names a ``compensate`` tool
is undone, one at a time, newest first. Compensations are step instances like any other, keyed
``undo:<key>`` (no planner makes a key with ``:``), so they are recorded, retried and replayed the same
way; the run fails once they have all finished, and its error says what was undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.states import RunState, TaskState
from control_plane.planning.model import (
    FINISHED,
    Compensation,
    Decision,
    Plan,
    RunOutcome,
    Start,
    StepState,
    ToolCall,
)
from control_plane.planning.paths import PathError
from control_plane.planning.records import Memo, memoized

UNDO = "undo:"


def decide(plan: Plan, run_input: Any, states: Mapping[str, StepState]) -> Decision:
    """``plan.decide``, followed by the compensations of what succeeded when the plan fails."""
    # Until a compensation is recorded, the plan is shown the records as they are (a Records keeps its memos).
    undoing = memoized(_Undoing, run_input, states, _Undoing, _undoing)
    planned = {key: state for key, state in states.items() if not key.startswith(UNDO)} if undoing else states
    decision = plan.decide(run_input, planned)
    if decision.outcome is None or decision.outcome.state == RunState.SUCCEEDED:
        return decision
    undone: list[str] = []
    problems: list[str] = []
    for key, state in reversed(list(planned.items())):
        element = state.step or key
        info = plan.steps.get(element)
        if state.state != TaskState.SUCCEEDED or info is None or info.compensate is None:
            continue
        undo = states.get(UNDO + key)
        if undo is None:
            return _compensate(key, element, state, run_input, info.compensate)
        if undo.state not in FINISHED:
            return Decision((), None)
        if undo.state == TaskState.SUCCEEDED:
            undone.append(key)
        else:
            problems.append(f"undoing {key!r} {undo.state}: {undo.error or 'no reason given'}")
    if not undone and not problems:
        return decision
    summary = [f"compensated {', '.join(repr(key) for key in undone)}"] if undone else []
    error = "; ".join([decision.outcome.error or "the run failed", *summary, *problems])
    return Decision((), RunOutcome(RunState.FAILED, None, error))


class _Undoing(Memo):
    """Whether a compensation is recorded (None: not looked for yet); a ``Records`` is looked at again only in
    the keys set since."""

    __slots__ = ("found",)

    def __init__(self, run_input: Any) -> None:
        super().__init__(run_input)
        self.found: bool | None = None

    def absorb(self, changed: list[str]) -> bool:
        self.found = bool(self.found) or any(key.startswith(UNDO) for key in changed)
        return True


def _undoing(memo: _Undoing, states: Mapping[str, StepState]) -> bool:
    if memo.found is None:
        memo.found = any(key.startswith(UNDO) for key in states)
    return memo.found


def _compensate(key: str, element: str, state: StepState, run_input: Any, compensate: Compensation) -> Decision:
    context = {"input": run_input, "steps": {element: {"output": state.output}}}
    try:
        rendered = compensate.input.render(context)
    except PathError as exc:
        return Decision((), RunOutcome(RunState.FAILED, None, f"compensation of {key!r} input: {exc}"))
    call = ToolCall(compensate.tool.name, compensate.tool.version, compensate.queue, rendered)
    return Decision((Start(UNDO + key, f"{element}:undo", call),), None)
