"""The LLM planner: plan steps, whose planning agent answers with a DAG that the run then runs.

A DAG step ``{name: X, plan: {agent, goal, tools, agents}, input}`` asks for a plan (``MakePlan``), as does
an FSM state or a behavior-tree leaf with ``plan:`` (``fields.read_plan`` reads them alike); this layer,
between the workflow's planner and the engine, runs it (``kept.layered``):

- the step's own instance (``RunPlan``: the built-in ``@plan``, kept by the control plane) records the
  pinned planning agent and what it is asked: the goal, the plan's input, and each tool and agent the plan
  may use with its description and input schema;
- the planning agent's loop runs under ``X/plan`` (``X/plan/turn-1``...). Its final answer must be a DAG
  document (JSON) that ``check_plan`` accepts: ``parse_dag``'s checks, the same as applying a workflow, and
  only the tools and agents the step offers. The problems go back to the planner for one repair turn (the
  agent loop's), after which X fails naming them;
- the plan accepted is recorded as the instance ``X/plan`` (``Record``: born succeeded, its output the
  document), and its steps run keyed ``X/<step>``, calling the versions the workflow pinned;
- when the plan's run ends, X is settled with its output, or fails with its error.

Pure like the planners it wraps: what the catalog knows (agents, pinned versions, descriptions) comes in
as values, and a plan's validation needs nothing else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bus.states import RunState, TaskState
from control_plane.planning.agent import AgentLoop, Check, nested_decision
from control_plane.planning.dag import DagWorkflow, parse_dag
from control_plane.planning.kept import Layer, layered
from control_plane.planning.model import (
    Decision,
    MakePlan,
    Record,
    RunOutcome,
    RunPlan,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
)
from control_plane.planning.problems import SpecProblem, WorkflowInvalid

PLAN = "plan"
"""Under a plan step's key: its planning loop (``X/plan/turn-1``) and its recorded plan (``X/plan``)."""
PLAN_KEYS = ("kind", "description", "steps", "output")
ANSWER = (
    'Answer with a DAG workflow document as JSON only: {"steps": [{"name": ..., "tool": ... or "agent": ..., '
    '"needs": [...], "input": ...}], "output": ...}. Use only the tools and agents offered; "$.input" reads '
    'the input given, "$.steps.NAME.output" the output of a step needed.'
)


@dataclass(frozen=True, slots=True)
class Offer:
    """A tool or an agent a plan step offers its planner, pinned: what the planner is told of it."""

    name: str
    version: str
    agent: bool
    description: str = ""
    input_schema: Mapping[str, Any] | None = None

    def shown(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"name": self.name, "version": self.version, "description": self.description}
        if self.input_schema is not None:
            shown["input_schema"] = dict(self.input_schema)
        return shown


def check_plan(document: Any, tools: Mapping[str, str], agents: Mapping[str, str]) -> list[SpecProblem]:
    """Every problem of a plan, ``parse_dag``'s and those of a plan (each tool and agent it calls among the
    ``tools`` and ``agents`` offered, as name -> pinned version); [] when it can run."""
    try:
        plan = parse_plan(json.dumps(document, sort_keys=True))
    except WorkflowInvalid as invalid:
        return list(invalid.problems)
    problems: list[SpecProblem] = []
    for info in plan.steps.values():
        problems.extend(_step_problems(info, tools, agents))
    return problems


@functools.lru_cache(maxsize=256)
def parse_plan(text: str) -> DagWorkflow:
    """A plan document (JSON text) checked as a DAG workflow, and as a plan; raises WorkflowInvalid."""
    document = json.loads(text)
    if not isinstance(document, dict):
        raise WorkflowInvalid([SpecProblem("plan", "must be a DAG workflow document (a JSON object)")])
    problems = [
        SpecProblem(key, f"unknown key; a plan has {', '.join(PLAN_KEYS)}") for key in document if key not in PLAN_KEYS
    ]
    if document.get("kind", "dag") != "dag":
        problems.append(SpecProblem("kind", f"a plan is a dag, not {document['kind']!r}"))
    for index, step in enumerate(document.get("steps") or []):
        if isinstance(step, dict) and step.get("name") == PLAN:
            problems.append(SpecProblem(f"steps[{index}].name", f"{PLAN!r} names the plan's own record"))
    try:
        plan = parse_dag(document)
    except WorkflowInvalid as invalid:
        problems.extend(invalid.problems)
    if problems:
        raise WorkflowInvalid(problems)
    return plan


def _step_problems(info: StepInfo, tools: Mapping[str, str], agents: Mapping[str, str]) -> Iterable[SpecProblem]:
    if info.uses:
        yield SpecProblem(f"{info.field}.plan", "plans do not nest")
    if info.retry is not None:
        yield SpecProblem(f"{info.field}.retry", "a plan's steps retry as their tools do")
    if info.compensate is not None:
        yield SpecProblem(f"{info.field}.compensate", "a plan's steps are not compensated")
    ref = info.tool
    if ref is None:
        return
    offered, noun = (agents, "agent") if ref.agent else (tools, "tool")
    version = offered.get(ref.name)
    if version is None:
        listed = ", ".join(offered) or "none"
        yield SpecProblem(ref.field, f"{noun} {ref.name!r} is not offered to this plan (the {noun}s: {listed})")
    elif ref.version not in (None, version):
        yield SpecProblem(ref.field, f"{noun} {ref.name} is offered at version {version} only")


def _offered(asked: Mapping[str, Any], key: str) -> dict[str, str]:
    """The tools (or agents) a recorded plan step offers: name -> pinned version."""
    return {str(offer["name"]): str(offer["version"]) for offer in asked.get(key) or ()}


def _checked(base: Check | None, tools: Mapping[str, str], agents: Mapping[str, str]) -> Check:
    """The planning loop's check of its answer: the agent's own output schema first, then the plan's."""

    def check(document: Any) -> str | None:
        if base is not None and (problem := base(document)):
            return problem
        problems = check_plan(document, tools, agents)
        return "; ".join(str(problem) for problem in problems) or None

    return check


@dataclass(frozen=True, slots=True)
class PlanSteps(Layer):
    """A workflow's plan with its plan steps run as planning loops and plans (the ``Plan`` protocol)."""

    planners: Mapping[str, AgentLoop]
    """Each planning agent, by its pinned ``name@version``."""
    offers: Mapping[tuple[str, str | None, bool], Offer]
    """Each tool and agent the plan steps name (planning agents too), pinned, by (name, version as written,
    agent)."""

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        return layered(self.plan, run_input, states, is_plan_record, self._advance, self._begin)

    def _begin(self, start: Start) -> Decision:
        """A plan step the planner asks for: its own instance, and its planning loop's first turn."""
        if not isinstance(start.action, MakePlan):
            return Decision((start,), None)
        ask = start.action
        pinned = self.offers[_key(ask.planner)]
        asked = {
            "goal": ask.goal,
            "input": ask.input,
            "tools": [self.offers[_key(ref)].shown() for ref in ask.tools],
            "agents": [self.offers[_key(ref)].shown() for ref in ask.agents],
            "answer": ANSWER,
        }
        run = RunPlan(f"{pinned.name}@{pinned.version}", asked)
        record = StepState(TaskState.QUEUED, step=start.step, input=run.input_record())
        first = self._advance(start.key, record, {})
        return first if first.outcome is not None else Decision((Start(start.key, start.step, run), *first.start), None)

    def _advance(self, key: str, state: StepState, states: Mapping[str, StepState]) -> Decision:
        """The next move of plan step ``key``: its planning loop until a plan is accepted, then the plan."""
        recorded = state.input if isinstance(state.input, dict) else {}
        asked: Mapping[str, Any] = recorded["input"] if isinstance(recorded.get("input"), dict) else {}
        tools, agents = _offered(asked, "tools"), _offered(asked, "agents")
        element, plan_key = state.step or key, f"{key}/{PLAN}"
        made = states.get(plan_key)
        if made is not None:
            return self._run(
                key, element, parse_plan(json.dumps(made.output, sort_keys=True)), asked, tools, agents, states
            )
        base = self.planners.get(str(recorded.get("planner")))
        if base is None:
            return _failed(f"plan step {key!r} names no planning agent of this workflow")
        loop = dataclasses.replace(base, check_output=_checked(base.check_output, tools, agents))
        planning = nested_decision(loop, plan_key, f"{element}/{PLAN}", asked, states)
        if planning.outcome is None:
            return planning
        if planning.outcome.state != RunState.SUCCEEDED:
            return _failed(f"planning failed: {planning.outcome.error}")
        document = planning.outcome.output
        plan = parse_plan(json.dumps(document, sort_keys=True))
        first = self._run(key, element, plan, asked, tools, agents, {})
        return Decision((Start(plan_key, f"{element}/{PLAN}", Record(document)), *first.start), first.outcome)

    def _run(
        self,
        key: str,
        element: str,
        plan: DagWorkflow,
        asked: Mapping[str, Any],
        tools: Mapping[str, str],
        agents: Mapping[str, str],
        states: Mapping[str, StepState],
    ) -> Decision:
        """The next move of the plan accepted for step ``key``, its steps keyed ``<key>/<step>``."""
        prefix = f"{key}/"
        own = {
            k[len(prefix) :]: s
            for k, s in states.items()
            if k.startswith(prefix) and k[len(prefix) :].partition("/")[0] != PLAN
        }
        decision = plan.decide(asked.get("input"), own)
        starts = []
        for start in decision.start:
            action = start.action
            if isinstance(action, ToolCall):
                version = (agents if action.agent else tools)[action.tool]
                action = dataclasses.replace(action, tool_version=version)
            starts.append(Start(prefix + start.key, f"{element}/{start.step}", action))
        outcome = decision.outcome
        if outcome is not None and outcome.state != RunState.SUCCEEDED:
            outcome = RunOutcome(RunState.FAILED, None, f"the plan failed: {outcome.error}")
        return Decision(tuple(starts), outcome)


def is_plan_record(state: StepState) -> bool:
    """Whether ``state`` is a plan step's own instance (``RunPlan.input_record``)."""
    return isinstance(state.input, dict) and "planner" in state.input


def _key(ref: ToolRef) -> tuple[str, str | None, bool]:
    return (ref.name, ref.version, ref.agent)


def _failed(error: str) -> Decision:
    return Decision((), RunOutcome(RunState.FAILED, None, error))
