"""The plan validator, pure: a plan is checked as `af workflow apply` checks a DAG, and as a plan (only the
tools and agents offered, no nesting, no retries or compensations of its own); and a plan step's document,
as a DAG step, an FSM state and a behavior-tree leaf."""

import pytest

from bus.states import RunState
from control_plane.planning.agent import AgentLoop, compile_instructions
from control_plane.planning.agent_steps import AgentSteps
from control_plane.planning.bt import parse_bt
from control_plane.planning.dag import parse_dag
from control_plane.planning.fsm import parse_fsm
from control_plane.planning.model import MakePlan, ToolRef
from control_plane.planning.planner import Offer, PlanSteps, check_plan
from control_plane.planning.problems import WorkflowInvalid

TOOLS = {"lookup": "1"}
AGENTS = {"summer": "2"}


def _problems(document: object) -> list[str]:
    return [str(problem) for problem in check_plan(document, TOOLS, AGENTS)]


def test_a_plan_using_only_what_is_offered_has_no_problems() -> None:
    plan = {"steps": [{"name": "a", "tool": "lookup@1"}, {"name": "b", "agent": "summer", "needs": ["a"]}]}
    assert _problems(plan) == []


def test_a_plan_gets_every_problem_the_dag_validator_finds() -> None:
    plan = {"steps": [{"name": "a", "tool": "lookup", "needs": ["b"]}, {"name": "b", "tool": "lookup", "needs": ["a"]}]}
    assert _problems(plan) == ["steps[0].needs: the needs form a cycle: a -> b -> a"]
    assert _problems(["not", "a", "document"]) == ["plan: must be a DAG workflow document (a JSON object)"]
    assert _problems({"kind": "fsm", "steps": [{"name": "a", "tool": "lookup"}], "name": "x"}) == [
        "name: unknown key; a plan has kind, description, steps, output",
        "kind: a plan is a dag, not 'fsm'",
    ]


def test_what_a_plan_step_does_not_offer_is_refused_at_its_field() -> None:
    plan = {
        "steps": [
            {"name": "a", "tool": "wipe"},
            {"name": "b", "tool": "lookup@2"},
            {"name": "c", "agent": "lookup", "fallback": {"tool": "noop"}},
        ]
    }
    assert _problems(plan) == [
        "steps[0].tool: tool 'wipe' is not offered to this plan (the tools: lookup)",
        "steps[1].tool: tool lookup is offered at version 1 only",
        "steps[2].agent: agent 'lookup' is not offered to this plan (the agents: summer)",
        "steps[2].fallback.tool: tool 'noop' is not offered to this plan (the tools: lookup)",
    ]


def test_plans_do_not_nest_nor_retry_nor_compensate_and_no_step_is_named_plan() -> None:
    nested = {"name": "p", "plan": {"agent": "summer", "goal": "g", "tools": ["lookup"]}}
    retried = {"name": "r", "tool": "lookup", "retry": {"max_attempts": 2}, "compensate": {"tool": "lookup"}}
    assert _problems({"steps": [nested, retried]}) == [
        "steps[0].plan: plans do not nest",
        "steps[1].retry: a plan's steps retry as their tools do",
        "steps[1].compensate: a plan's steps are not compensated",
    ]
    assert _problems({"steps": [{"name": "plan", "tool": "lookup"}]}) == [
        "steps[0].name: 'plan' names the plan's own record"
    ]


def test_a_plan_step_needs_an_agent_a_goal_and_something_to_offer() -> None:
    with pytest.raises(WorkflowInvalid) as refused:
        parse_dag({"steps": [{"name": "p", "tool": "lookup", "plan": {"tools": [], "extra": 1}}]})
    assert [str(problem) for problem in refused.value.problems] == [
        "steps[0].tool: a plan step runs the plan its agent makes, not a call",
        "steps[0].plan.extra: unknown key; a plan has agent, goal, tools, agents",
        "steps[0].plan.agent: required",
        "steps[0].plan.goal: required",
        "steps[0].plan.tools: a plan needs at least one tool or agent to use",
    ]


PLAN = {"agent": "helper", "goal": "$.input.goal", "tools": ["lookup"]}


def test_a_plan_state_and_a_plan_leaf_ask_for_their_plan_and_are_checked_like_a_dag_plan_step() -> None:
    fsm = parse_fsm(
        {
            "initial": "p",
            "states": {
                "p": {"plan": PLAN, "input": {"t": "$.input.t"}, "transitions": [{"to": "end"}]},
                "end": {"final": True},
            },
        }
    )
    bt = parse_bt({"root": {"sequence": [{"name": "p", "plan": PLAN, "input": {"t": "$.input.t"}}]}})
    planner, lookup = ToolRef("states.p.plan.agent", "helper", None, True), ToolRef("", "lookup", None)
    for workflow in (fsm, bt):
        (start,) = workflow.decide({"goal": "tides", "t": 1}, {}).start
        assert start.key == "p" and isinstance(start.action, MakePlan)
        assert (start.action.goal, start.action.input) == ("tides", {"t": 1})
        info = workflow.steps["p"]
        assert info.tool is not None and (info.tool.name, info.tool.agent) == (planner.name, True)
        assert [(ref.name, ref.agent) for ref in info.uses] == [(lookup.name, False)]
    with pytest.raises(WorkflowInvalid) as refused:
        bad = {"plan": {"goal": "g"}, "queue": "q", "transitions": [{"to": "end"}]}
        parse_fsm({"initial": "p", "states": {"p": bad, "end": {"final": True}}})
    assert [str(problem) for problem in refused.value.problems] == [
        "states.p.queue: unknown key; a plan state has plan, input, compensate, transitions, on_failure",
        "states.p.plan.agent: required",
        "states.p.plan.tools: a plan needs at least one tool or agent to use",
    ]
    with pytest.raises(WorkflowInvalid) as refused:
        parse_bt({"root": {"name": "p", "plan": {"agent": "helper", "tools": ["lookup"]}, "tool": "x"}})
    assert [str(problem) for problem in refused.value.problems] == [
        "root.tool: unknown key; a plan leaf has name, plan, input, compensate",
        "root.plan.goal: required",
    ]


def _loop(instructions: str) -> AgentLoop:
    return AgentLoop(
        name="helper",
        version="1",
        instructions=compile_instructions(instructions),
        model="tier1",
        tools={},
        model_queue="default",
        max_turns=2,
    )


def test_an_agent_step_or_a_plan_step_that_cannot_even_start_fails_at_once_and_starts_nothing() -> None:
    agent_step = parse_dag({"steps": [{"name": "a", "agent": "helper", "input": {}}]})
    agents = AgentSteps(agent_step, {"helper@1": _loop("Use {{$.input.missing}}")}, {("helper", None): "helper@1"})
    decision = agents.decide({}, {})
    assert decision.start == () and decision.outcome is not None
    assert decision.outcome.error == "step 'a' failed: instructions: $.input.missing: no key 'missing'"

    plan_step = parse_dag({"steps": [{"name": "p", "plan": {"agent": "helper", "goal": "g", "tools": ["lookup"]}}]})
    offers = {("helper", None, True): Offer("helper", "1", True), ("lookup", None, False): Offer("lookup", "1", False)}
    plans = PlanSteps(plan_step, {"helper@1": _loop("Plan {{$.input.input.missing}}")}, offers)
    decision = plans.decide({}, {})
    assert decision.start == () and decision.outcome is not None and decision.outcome.state == RunState.FAILED
    assert (
        decision.outcome.error
        == "step 'p' failed: planning failed: instructions: $.input.input.missing: no key 'missing'"
    )
