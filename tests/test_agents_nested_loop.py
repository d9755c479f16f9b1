"""The agent loop's sub-agents and handoffs as pure planning: a sub-agent's call is an instance kept under
the caller's call key with its own loop nested below it (at any depth), settled when that loop ends; a
handoff carries the transcript to the other agent, whose turns go on numbering from the caller's."""

import json
from typing import Any

from bus.states import RunState, TaskState
from control_plane.catalog.agents import AgentSpec, problems
from control_plane.planning.agent import AgentLoop, compile_instructions
from control_plane.planning.agent_steps import AgentSteps
from control_plane.planning.kinds import parse_workflow
from control_plane.planning.model import RunAgent, StepState, ToolCall


def _agent(name: str, max_turns: int = 3, **fields: Any) -> AgentLoop:
    return AgentLoop(
        name=name,
        version="1",
        instructions=compile_instructions(f"You are {name}."),
        model="tier1",
        tools={},
        model_queue="default",
        max_turns=max_turns,
        **fields,
    )


def _asks(name: str, arguments: Any) -> StepState:
    call = {"id": f"c-{name}", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    return StepState(TaskState.SUCCEEDED, {"message": {"role": "assistant", "content": None, "tool_calls": [call]}})


def _says(text: str) -> StepState:
    return StepState(TaskState.SUCCEEDED, {"message": {"role": "assistant", "content": text}})


def _kept(agent: str, value: Any) -> StepState:
    return StepState(TaskState.QUEUED, input={"agent": agent, "input": value})


def test_a_sub_agent_call_runs_its_loop_under_the_call_key_at_any_depth_and_settles_with_its_answer() -> None:
    checker = _agent("checker")
    research = _agent("research", agents={"checker": checker})
    coordinator = _agent("coordinator", agents={"research": research})
    states: dict[str, StepState] = {"turn-1": _asks("research", {"input": "tides"})}
    begun = coordinator.decide("go", states)
    assert [(s.key, s.step) for s in begun.start] == [
        ("turn-1/call-0", "research"),
        ("turn-1/call-0/turn-1", "research/turn"),
    ]
    assert begun.start[0].action == RunAgent("research@1", "tides")
    turn = begun.start[1].action
    assert isinstance(turn, ToolCall) and turn.input["agent"] == "research@1"
    assert turn.input["body"]["messages"][1]["content"] == "tides"
    offered = coordinator.decide("go", {}).start[0].action
    assert isinstance(offered, ToolCall)
    assert [f["function"]["name"] for f in offered.input["body"]["tools"]] == ["research"]

    states["turn-1/call-0"] = _kept("research@1", "tides")
    states["turn-1/call-0/turn-1"] = _asks("checker", {"input": {"claim": "moon"}})
    deeper = coordinator.decide("go", states)
    assert [s.key for s in deeper.start] == ["turn-1/call-0/turn-1/call-0", "turn-1/call-0/turn-1/call-0/turn-1"]
    assert [s.step for s in deeper.start] == ["research/checker", "research/checker/turn"]

    states["turn-1/call-0/turn-1/call-0"] = _kept("checker@1", {"claim": "moon"})
    states["turn-1/call-0/turn-1/call-0/turn-1"] = _says("true")
    checked = coordinator.decide("go", states)
    assert [(s.key, s.state, s.output) for s in checked.settle] == [
        ("turn-1/call-0/turn-1/call-0", TaskState.SUCCEEDED, "true")
    ]
    assert [s.key for s in checked.start] == ["turn-1/call-0/turn-2"]
    research_turn = checked.start[0].action
    assert isinstance(research_turn, ToolCall)
    assert research_turn.input["body"]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "c-checker",
        "content": "true",
    }

    # Settled as the orchestrator records it, then research answers: its call settles, the caller goes on.
    states["turn-1/call-0/turn-1/call-0"] = StepState(TaskState.SUCCEEDED, "true", step="research/checker")
    states["turn-1/call-0/turn-2"] = _says("tides are real")
    answered = coordinator.decide("go", states)
    assert [(s.key, s.output) for s in answered.settle] == [("turn-1/call-0", "tides are real")]
    assert [s.key for s in answered.start] == ["turn-2"]
    last = answered.start[0].action
    assert isinstance(last, ToolCall) and last.input["body"]["messages"][-1]["content"] == "tides are real"


def test_a_sub_agent_that_fails_comes_back_to_its_caller_as_an_error_result() -> None:
    looper = _agent("looper", max_turns=1)
    caller = _agent("caller", agents={"looper": looper})
    states = {
        "turn-1": _asks("looper", {"input": "x"}),
        "turn-1/call-0": _kept("looper@1", "x"),
        "turn-1/call-0/turn-1": _asks("looper", {"input": "again"}),
    }
    decision = caller.decide("go", states)
    assert decision.outcome is None
    assert [(s.key, s.state) for s in decision.settle] == [("turn-1/call-0", TaskState.FAILED)]
    assert decision.settle[0].error is not None and decision.settle[0].error.startswith("max-turns")
    turn = decision.start[0].action
    assert isinstance(turn, ToolCall)
    assert "max-turns" in turn.input["body"]["messages"][-1]["content"]


def test_a_sub_agent_call_without_its_input_goes_back_to_the_model() -> None:
    caller = _agent("caller", agents={"helper": _agent("helper")})
    decision = caller.decide("go", {"turn-1": _asks("helper", {"question": "x"})})
    assert [s.key for s in decision.start] == ["turn-2"]
    turn = decision.start[0].action
    assert isinstance(turn, ToolCall) and "need its input" in turn.input["body"]["messages"][-1]["content"]


def test_a_handoff_carries_the_transcript_to_the_other_agent_whose_answer_ends_the_run() -> None:
    specialist = _agent("specialist")
    triage = _agent("triage", handoffs={"specialist": specialist})
    offered = triage.decide("help", {}).start[0].action
    assert isinstance(offered, ToolCall)
    assert [f["function"]["name"] for f in offered.input["body"]["tools"]] == ["handoff_to_specialist"]
    states = {"turn-1": _asks("handoff_to_specialist", {})}
    handed = triage.decide("help", states)
    assert [s.key for s in handed.start] == ["turn-2"]
    turn = handed.start[0].action
    assert isinstance(turn, ToolCall) and turn.input["agent"] == "specialist@1"
    messages = turn.input["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "You are specialist."}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool"]
    assert "tools" not in turn.input["body"]
    states["turn-2"] = _says("fixed")
    outcome = triage.decide("help", states).outcome
    assert outcome is not None and outcome.state == RunState.SUCCEEDED and outcome.output == "fixed"


def test_the_agent_handed_to_counts_its_own_turns() -> None:
    specialist = _agent("specialist", max_turns=1, agents={"helper": _agent("helper")})
    triage = _agent("triage", max_turns=1, handoffs={"specialist": specialist})
    states = {
        "turn-1": _asks("handoff_to_specialist", {}),
        "turn-2": _asks("nosuch", {}),
    }
    outcome = triage.decide("help", states).outcome
    assert outcome is not None and outcome.error is not None and outcome.error.startswith("max-turns")


def test_a_sub_agent_call_inside_an_agent_step_of_a_workflow_is_its_loops_own() -> None:
    coordinator = _agent("coordinator", agents={"helper": _agent("helper")})
    dag = parse_workflow(
        {"name": "w", "version": "1", "kind": "dag", "steps": [{"name": "research", "agent": "coordinator"}]}
    )
    plan = AgentSteps(dag, {"coordinator@1": coordinator}, {("coordinator", None): "coordinator@1"})
    states: dict[str, StepState] = {
        "research": _kept("coordinator@1", "go"),
        "research/turn-1": _asks("helper", {"input": "x"}),
        "research/turn-1/call-0": _kept("helper@1", "x"),
    }
    assert [s.key for s in plan.decide(None, states).start] == ["research/turn-1/call-0/turn-1"]
    states["research/turn-1/call-0/turn-1"] = _says("helped")
    helped = plan.decide(None, states)
    assert helped.outcome is None
    assert [(s.key, s.output) for s in helped.settle] == [("research/turn-1/call-0", "helped")]
    assert [(s.key, s.step) for s in helped.start] == [("research/turn-2", "research/turn")]


def test_an_agent_document_may_not_name_one_function_as_both_a_tool_and_a_sub_agent() -> None:
    spec = AgentSpec(name="a", version="1", instructions="x", model="tier1", tools=["lookup@1"], agents=["lookup"])
    assert [(p.field, p.detail) for p in problems(spec)] == [("agents[0]", "lookup is both a tool and an agent")]


def test_a_turn_that_hands_off_runs_none_of_its_other_calls() -> None:
    triage = _agent("triage", agents={"helper": _agent("helper")}, handoffs={"specialist": _agent("specialist")})
    calls = [
        {"id": "a", "type": "function", "function": {"name": "helper", "arguments": '{"input": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "handoff_to_specialist", "arguments": "{}"}},
    ]
    turn = StepState(TaskState.SUCCEEDED, {"message": {"role": "assistant", "content": None, "tool_calls": calls}})
    decision = triage.decide("help", {"turn-1": turn})
    assert [s.key for s in decision.start] == ["turn-2"]
    action = decision.start[0].action
    assert isinstance(action, ToolCall)
    results = action.input["body"]["messages"][3:]
    assert [(m["tool_call_id"], m["content"]) for m in results] == [
        ("a", '{"error":"not run: the conversation was handed to specialist"}'),
        ("b", '{"handoff":"specialist"}'),
    ]


def test_a_sub_agent_that_hands_off_answers_its_caller_with_the_last_agents_answer() -> None:
    helper = _agent("helper", handoffs={"expert": _agent("expert")})
    caller = _agent("caller", agents={"helper": helper})
    states = {
        "turn-1": _asks("helper", {"input": "q"}),
        "turn-1/call-0": _kept("helper@1", "q"),
        "turn-1/call-0/turn-1": _asks("handoff_to_expert", {}),
    }
    handed = caller.decide("go", states)
    assert [s.key for s in handed.start] == ["turn-1/call-0/turn-2"]
    action = handed.start[0].action
    assert isinstance(action, ToolCall) and action.input["agent"] == "expert@1"
    states["turn-1/call-0/turn-2"] = _says("expert answer")
    assert [(s.key, s.output) for s in caller.decide("go", states).settle] == [("turn-1/call-0", "expert answer")]
