"""Agent steps inside workflows: a DAG step, an FSM state or a behavior-tree leaf that runs an agent.

A workflow's planner asks for an agent step as it asks for a tool call (``ToolCall`` with ``agent``); this
layer, between the planner and the engine, makes it an agent loop (``agent.AgentLoop``) of the run:

- the step itself becomes an instance the control plane keeps (``RunAgent``: the built-in ``@agent``),
  recording the agent and its rendered input, so that the loop can be rebuilt from the records;
- its turns and tool calls are instances keyed under it, ``<key>/turn-<n>`` and ``<key>/turn-<n>/call-<i>``,
  decided by the agent's loop over those records alone, and hidden from the workflow's planner;
- when the loop ends, the step is settled (``Settle``) with the final answer or the loop's error, and the
  workflow's planner sees it finished like any step, in the same decision.

Pure like the planners it wraps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus.states import RunState, TaskState
from control_plane.planning.agent import AgentLoop, nested_decision
from control_plane.planning.kept import Layer, layered
from control_plane.planning.model import Decision, RunAgent, RunOutcome, Start, StepState, ToolCall


@dataclass(frozen=True, slots=True)
class AgentSteps(Layer):
    """A workflow's plan with its agent steps run as agent loops (the ``Plan`` protocol)."""

    loops: Mapping[str, AgentLoop]
    """Each agent the workflow runs, by its pinned ``name@version``."""
    pins: Mapping[tuple[str, str | None], str]
    """The pinned ``name@version`` of each agent as the workflow names it (name, version or None)."""

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        return layered(self.plan, run_input, states, is_agent_record, self._loop, self._begin)

    def _begin(self, start: Start) -> Decision:
        """An agent step the planner asks for: its own instance, and its loop's first turn."""
        if not isinstance(start.action, ToolCall) or not start.action.agent:
            return Decision((start,), None)
        ref = self.pins[(start.action.tool, start.action.tool_version)]
        agent = RunAgent(ref, start.action.input)
        record = StepState(TaskState.QUEUED, step=start.step, input=agent.input_record())
        first = self._loop(start.key, record, {})
        return (
            first if first.outcome is not None else Decision((Start(start.key, start.step, agent), *first.start), None)
        )

    def _loop(self, key: str, state: StepState, states: Mapping[str, StepState]) -> Decision:
        """The next move of agent step ``key``'s loop, over its own instances (their keys under it)."""
        recorded = state.input if isinstance(state.input, dict) else {}
        loop = self.loops.get(str(recorded.get("agent")))
        if loop is None:
            return Decision(
                (), RunOutcome(RunState.FAILED, None, f"agent step {key!r} names no agent of this workflow")
            )
        return nested_decision(loop, key, state.step or key, recorded.get("input"), states)


def is_agent_record(state: StepState) -> bool:
    """Whether ``state`` is an agent step's own instance (``RunAgent.input_record``)."""
    return isinstance(state.input, dict) and "agent" in state.input
