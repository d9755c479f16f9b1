"""Steps the control plane keeps itself, whose work runs as instances keyed under them: agent steps
(``agent_steps``) and plan steps (``planner``) layer a workflow's planner the same way.

The step's own instance records what it was asked; the instances keyed ``<key>/...`` are hidden from the
workflow's planner and decided by the layer alone; when they are done, the step is settled (``Settle``) and
the workflow's planner sees it finished like any step, in the same decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.states import RunState, TaskState
from control_plane.planning.model import FINISHED, Decision, Plan, Settle, Start, StepInfo, StepState


@dataclass(frozen=True, slots=True)
class Layer:
    """A workflow's plan that a layer wraps: the workflow's elements and signals are its own."""

    plan: Plan

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def steps(self) -> Mapping[str, StepInfo]:
        return self.plan.steps

    @property
    def signals(self) -> frozenset[str]:
        return self.plan.signals


Advance = Callable[[str, StepState, Mapping[str, StepState]], Decision]
"""The next move of a kept step (its key, its record, every record of the run); an outcome settles it."""
Begin = Callable[[Start], Decision]
"""What a start the workflow's planner asks for becomes: itself, or a kept step's instance and first moves,
or (an outcome) the kept step's failure before it could start (its agent's instructions cannot be rendered,
say)."""


def layered(
    plan: Plan,
    run_input: Any,
    states: Mapping[str, StepState],
    kept: Callable[[StepState], bool],
    advance: Advance,
    begin: Begin,
) -> Decision:
    """``plan.decide`` with the steps whose records ``kept`` recognises run by ``advance``."""
    recognised = {key: state for key, state in states.items() if kept(state)}
    # A kept instance under another (a sub-agent's call inside an agent step) is its parent's loop's own.
    own = {key: state for key, state in recognised.items() if not _under(key, recognised)}
    inner = {key: state for key, state in states.items() if not _under(key, own)}
    starts: list[Start] = []
    settled: list[Settle] = []
    for key, state in own.items():
        if state.state in FINISHED:
            continue
        decision = advance(key, state, states)
        starts.extend(decision.start)
        settled.extend(decision.settle)
        if decision.outcome is not None:
            output, error = decision.outcome.output, decision.outcome.error
            if decision.outcome.state == RunState.SUCCEEDED:
                settled.append(Settle(key, TaskState.SUCCEEDED, output, error))
            else:
                settled.append(Settle(key, TaskState.FAILED, output, error))
            inner[key] = StepState(settled[-1].state, output, error, state.step, state.input)
    # A kept step that fails before it starts is never recorded: the planner sees it failed at once, and
    # decides again; replaying the same records fails it the same way.
    while True:
        decision = plan.decide(run_input, inner)
        if decision.outcome is not None:
            return Decision((), decision.outcome, (*settled, *decision.settle))
        begun = [(start, begin(start)) for start in decision.start]
        unstarted = [(start, first) for start, first in begun if first.outcome is not None]
        if not unstarted:
            break
        for start, first in unstarted:
            assert first.outcome is not None
            inner[start.key] = StepState(TaskState.FAILED, None, first.outcome.error, start.step)
    for _, first in begun:
        starts.extend(first.start)
    return Decision(tuple(starts), None, (*settled, *decision.settle))


def _under(key: str, own: Mapping[str, StepState]) -> bool:
    """Whether ``key`` is an instance of a kept step's work (keyed under it)."""
    return any(key.startswith(f"{parent}/") for parent in own)
