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
from control_plane.planning.agent import AgentLoop, moved_under
from control_plane.planning.model import (
    FINISHED,
    Decision,
    Plan,
    RunAgent,
    RunOutcome,
    Settle,
    Start,
    StepInfo,
    StepState,
    ToolCall,
)


@dataclass(frozen=True, slots=True)
class AgentSteps:
    """A workflow's plan with its agent steps run as agent loops (the ``Plan`` protocol)."""

    plan: Plan
    loops: Mapping[str, AgentLoop]
    """Each agent the workflow runs, by its pinned ``name@version``."""
    pins: Mapping[tuple[str, str | None], str]
    """The pinned ``name@version`` of each agent as the workflow names it (name, version or None)."""

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def steps(self) -> Mapping[str, StepInfo]:
        return self.plan.steps

    @property
    def signals(self) -> frozenset[str]:
        """The workflow's own, and those its agents' loops wait for (``approve``)."""
        return self.plan.signals.union(*(loop.signals for loop in self.loops.values()))

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        agents = {key: state for key, state in states.items() if state.input is not None}
        inner = {key: state for key, state in states.items() if not _in_loop(key, agents)}
        starts: list[Start] = []
        settled: list[Settle] = []
        for key, state in agents.items():
            if state.state in FINISHED:
                continue
            decision = self._loop(key, state, states)
            starts.extend(decision.start)
            if decision.outcome is not None:
                output, error = decision.outcome.output, decision.outcome.error
                if decision.outcome.state == RunState.SUCCEEDED:
                    settled.append(Settle(key, TaskState.SUCCEEDED, output, error))
                else:
                    settled.append(Settle(key, TaskState.FAILED, output, error))
                inner[key] = StepState(settled[-1].state, output, error, state.step, state.input)
        decision = self.plan.decide(run_input, inner)
        if decision.outcome is not None:
            return Decision((), decision.outcome, tuple(settled))
        for start in decision.start:
            starts.extend(self._begin(start) if _is_agent_call(start) else (start,))
        return Decision(tuple(starts), None, tuple(settled))

    def _begin(self, start: Start) -> list[Start]:
        """An agent step the planner asks for: its own instance, and its loop's first turn."""
        assert isinstance(start.action, ToolCall)
        ref = self.pins[(start.action.tool, start.action.tool_version)]
        agent = RunAgent(ref, start.action.input)
        record = StepState(TaskState.QUEUED, step=start.step, input=agent.input_record())
        return [Start(start.key, start.step, agent), *self._loop(start.key, record, {}).start]

    def _loop(self, key: str, state: StepState, states: Mapping[str, StepState]) -> Decision:
        """The next move of agent step ``key``'s loop, over its own instances (their keys under it)."""
        recorded = state.input if isinstance(state.input, dict) else {}
        loop = self.loops.get(str(recorded.get("agent")))
        if loop is None:
            return Decision(
                (), RunOutcome(RunState.FAILED, None, f"agent step {key!r} names no agent of this workflow")
            )
        prefix = f"{key}/"
        own = {k[len(prefix) :]: s for k, s in states.items() if k.startswith(prefix)}
        decision = loop.decide(recorded.get("input"), own)
        element = state.step or key
        starts = tuple(
            Start(prefix + s.key, f"{element}/{s.step}", moved_under(s.action, prefix)) for s in decision.start
        )
        return Decision(starts, decision.outcome)


def _is_agent_call(start: Start) -> bool:
    return isinstance(start.action, ToolCall) and start.action.agent


def _in_loop(key: str, agents: Mapping[str, StepState]) -> bool:
    """Whether ``key`` is an instance of an agent step's loop (keyed under it)."""
    return any(key.startswith(f"{agent}/") for agent in agents)
