"""Plan steps on the real stack: the planning agent's turns go through the model gateway (the scripted mock
provider), AgentFlow checks its DAG with the validator `af workflow apply` uses and only the tools and agents
the step offers, records it, and runs it under the step's key; a bad plan gets one repair turn, then fails.
A plan is a state of an FSM and a leaf of a behavior tree too."""

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from agentflow import Client

from bench import plan_steps
from tests.conftest import Stack
from tests.test_agents_loop import LOOKUP

GOOD = {
    "steps": [
        {"name": "look", "tool": "lookup", "input": {"query": "$.input.topic"}},
        {"name": "sum", "agent": "summer", "needs": ["look"], "input": {"question": "$.steps.look.output.found"}},
    ],
    "output": {"found": "$.steps.look.output.found", "summary": "$.steps.sum.output"},
}


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Iterator[tuple[str, httpx.Client]]:
    """A tenant of this module's own, with a worker, the lookup tool, a summing agent and its key."""
    name = f"plan-{secrets.token_hex(3)}"
    key = asyncio.run(stack.tenant_key(name))
    worker = stack.start_worker(tenant=name)
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        assert http.post("/v1/tools", json=LOOKUP).status_code == 201
        _model(http, "script-summer", [{"content": "in short: done"}])
        _agent(http, "summer", "script-summer", description="Sums a finding up in one line", instructions="Sum up")
        yield key, http
    worker.terminate()
    worker.wait(30)


def _model(http: httpx.Client, name: str, turns: list[dict[str, Any]]) -> None:
    answer = http.post("/v1/models", json={"name": name, "provider": "mock", "options": {"turns": turns}})
    assert answer.is_success, answer.text


def _agent(http: httpx.Client, name: str, model: str, **fields: Any) -> None:
    document = {"name": name, "version": "1", "model": model, "instructions": "Plan for {{$.input.goal}}"}
    answer = http.post("/v1/agents", json=document | fields)
    assert answer.status_code == 201, answer.text


def _planned(http: httpx.Client, key: str, stack: Stack, name: str, plans: list[Any]) -> dict[str, Any]:
    """Run a workflow whose plan step's planner answers ``plans`` turn by turn (the last one again after)."""
    _model(http, f"script-{name}", [{"content": json.dumps(plan)} for plan in plans])
    _agent(http, f"{name}-planner", f"script-{name}")
    workflow = {
        "name": name,
        "version": "1",
        "kind": "dag",
        "steps": [
            {
                "name": "research",
                "plan": {"agent": f"{name}-planner", "goal": "$.input.goal", "tools": ["lookup"], "agents": ["summer"]},
                "input": {"topic": "$.input.topic"},
            },
            {
                "name": "check",
                "tool": "lookup",
                "needs": ["research"],
                "input": {"query": "$.steps.research.output.found"},
            },
        ],
        "output": {"research": "$.steps.research.output", "check": "$.steps.check.output"},
    }
    answer = http.post("/v1/workflows", json=workflow)
    assert answer.status_code == 201, answer.text
    with Client(api_url=stack.api_url, token=key) as af:
        started = af.start_run(workflow=name, input={"goal": "learn about tides", "topic": "tides"})
        return af.wait_run(started["id"], timeout=90)


def _steps(final: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["step"]: task for task in final["tasks"]}


def test_a_plan_step_runs_the_dag_its_planner_made_under_its_key_and_later_steps_read_its_output(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    final = _planned(http, key, stack, "planned", [GOOD])
    assert final["state"] == "succeeded", (
        final["error"],
        [(t["step"], t["state"], t["error"]) for t in final["tasks"]],
    )
    assert final["output"] == {
        "research": {"found": "TIDES", "summary": "in short: done"},
        "check": {"found": "TIDES"},
    }
    steps = _steps(final)
    assert set(steps) == {
        "research",
        "research/plan/turn-1",
        "research/plan",
        "research/look",
        "research/sum",
        "research/sum/turn-1",
        "check",
    }
    assert steps["research"]["tool"] == "@plan@1" and steps["research/plan"]["tool"] == "@record@1"
    assert steps["research/plan"]["output"] == GOOD
    assert steps["research/look"]["sandbox"]["kind"] != "builtin"
    asked = json.loads(steps["research/plan/turn-1"]["input"]["body"]["messages"][1]["content"])
    assert asked["goal"] == "learn about tides" and asked["input"] == {"topic": "tides"}
    assert [(t["name"], t["version"]) for t in asked["tools"]] == [("lookup", "1")]
    assert asked["tools"][0]["description"] == LOOKUP["description"]
    assert asked["agents"] == [{"name": "summer", "version": "1", "description": "Sums a finding up in one line"}]
    with Client(api_url=stack.api_url, token=key) as af:
        events = [event["type"] for event in af.events(final["id"], idle_timeout=5)]
    assert "plan.started" in events and "plan.recorded" in events


def _run_workflow(http: httpx.Client, key: str, stack: Stack, workflow: dict[str, Any]) -> dict[str, Any]:
    answer = http.post("/v1/workflows", json=workflow)
    assert answer.status_code == 201, answer.text
    with Client(api_url=stack.api_url, token=key) as af:
        started = af.start_run(workflow=workflow["name"], input={"goal": "learn about tides", "topic": "tides"})
        final = af.wait_run(started["id"], timeout=90)
    assert final["state"] == "succeeded", (
        final["error"],
        [(t["step"], t["state"], t["error"]) for t in final["tasks"]],
    )
    return final


PLANNED = {"research", "research/plan/turn-1", "research/plan", "research/look", "research/sum", "research/sum/turn-1"}


def test_a_plan_state_of_an_fsm_runs_its_plan_and_its_transition_reads_the_plan_output(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    _model(http, "script-fsm-planner", [{"content": json.dumps(GOOD)}])
    _agent(http, "fsm-planner", "script-fsm-planner")
    plan = {"agent": "fsm-planner", "goal": "$.input.goal", "tools": ["lookup"], "agents": ["summer"]}
    found = '$.steps.research.output.found == "TIDES"'
    workflow = {
        "name": "planned-fsm",
        "version": "1",
        "kind": "fsm",
        "initial": "research",
        "states": {
            "research": {
                "plan": plan,
                "input": {"topic": "$.input.topic"},
                "transitions": [{"to": "found", "when": found}, {"to": "lost"}],
            },
            "found": {"final": True, "output": "$.steps.research.output.summary"},
            "lost": {"final": True, "status": "failed"},
        },
    }
    final = _run_workflow(http, key, stack, workflow)
    assert final["output"] == "in short: done"
    steps = _steps(final)
    assert set(steps) == PLANNED
    assert steps["research"]["tool"] == "@plan@1" and steps["research/plan"]["output"] == GOOD


def test_a_plan_leaf_of_a_behavior_tree_runs_its_plan_and_the_next_leaf_reads_its_output(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    _model(http, "script-bt-planner", [{"content": json.dumps(GOOD)}])
    _agent(http, "bt-planner", "script-bt-planner")
    plan = {"agent": "bt-planner", "goal": "$.input.goal", "tools": ["lookup"], "agents": ["summer"]}
    workflow = {
        "name": "planned-bt",
        "version": "1",
        "kind": "bt",
        "root": {
            "sequence": [
                {"name": "research", "plan": plan, "input": {"topic": "$.input.topic"}},
                {"name": "check", "tool": "lookup", "input": {"query": "$.steps.research.output.summary"}},
            ]
        },
        "output": {"research": "$.steps.research.output", "check": "$.steps.check.output"},
    }
    final = _run_workflow(http, key, stack, workflow)
    assert final["output"] == {
        "research": {"found": "TIDES", "summary": "in short: done"},
        "check": {"found": "IN SHORT: DONE"},
    }
    steps = _steps(final)
    assert set(steps) == PLANNED | {"check"}
    assert steps["research"]["tool"] == "@plan@1" and steps["research/plan"]["output"] == GOOD


def test_a_bad_plan_goes_back_to_the_planner_with_its_problems_for_one_repair_turn(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    bad = {"steps": [{"name": "look", "tool": "lookup", "needs": ["ghost"]}]}
    final = _planned(http, key, stack, "repaired", [bad, GOOD])
    assert final["state"] == "succeeded", (
        final["error"],
        [(t["step"], t["state"], t["error"]) for t in final["tasks"]],
    )
    steps = _steps(final)
    repair = steps["research/plan/turn-2"]["input"]["body"]["messages"][-1]
    assert repair["role"] == "user" and "steps[0].needs[0]: unknown step 'ghost'" in repair["content"], repair
    assert steps["research/plan"]["output"] == GOOD and "research/look" in steps


def test_a_plan_that_stays_bad_after_its_repair_turn_fails_the_step_naming_its_problems(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    cyclic = {
        "steps": [{"name": "a", "tool": "lookup", "needs": ["b"]}, {"name": "b", "tool": "lookup", "needs": ["a"]}]
    }
    final = _planned(http, key, stack, "stubborn", [cyclic])
    assert final["state"] == "failed", final
    assert "step 'research' failed" in final["error"] and "the needs form a cycle: a -> b -> a" in final["error"]
    steps = _steps(final)
    assert set(steps) == {"research", "research/plan/turn-1", "research/plan/turn-2"}
    assert steps["research"]["state"] == "failed" and "planning failed" in steps["research"]["error"]


def test_a_plan_naming_a_tool_the_step_does_not_offer_is_refused_and_the_tool_never_runs(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    sneaky = {"steps": [{"name": "wipe", "tool": "noop", "input": {}}, {"name": "look", "tool": "lookup@7"}]}
    final = _planned(http, key, stack, "sneaky", [sneaky])
    assert final["state"] == "failed", final
    assert "steps[0].tool: tool 'noop' is not offered to this plan (the tools: lookup)" in final["error"], final
    assert "steps[1].tool: tool lookup is offered at version 1 only" in final["error"]
    assert not [task for task in final["tasks"] if task["tool"].startswith("noop")]


def test_a_plan_step_naming_an_unknown_tool_or_planner_is_refused_when_applied(
    tenant: tuple[str, httpx.Client],
) -> None:
    _, http = tenant
    step = {"name": "p", "plan": {"agent": "nobody", "goal": "g", "tools": ["lookup", "ghost"], "agents": []}}
    answer = http.post("/v1/workflows", json={"name": "ghostly", "version": "1", "kind": "dag", "steps": [step]})
    assert answer.status_code == 422, answer.text
    problems = {(p["field"], p["type"].rsplit("/", 1)[-1]) for p in answer.json()["problems"]}
    assert problems == {("steps[0].plan.agent", "unknown-agent"), ("steps[0].plan.tools[1]", "unknown-tool")}


def test_many_plans_at_once_each_run_and_what_accepting_them_costs_is_reported(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    plan = {"steps": [{"name": "look", "tool": "lookup", "input": {"query": "$.input.topic"}}]}
    _model(http, "script-many", [{"content": json.dumps(plan)}])
    _agent(http, "many-planner", "script-many")
    step = {"name": "x", "plan": {"agent": "many-planner", "goal": "$.input.goal", "tools": ["lookup"]}}
    workflow = {"name": "many-plans", "version": "1", "kind": "dag", "steps": [step]}
    assert http.post("/v1/workflows", json=workflow).status_code == 201
    with Client(api_url=stack.api_url, token=key) as af:
        started = [af.start_run(workflow="many-plans", input={"goal": "g", "topic": f"t{i}"}) for i in range(20)]
        finals = [af.wait_run(run["id"], timeout=120) for run in started]
    assert [final["state"] for final in finals] == ["succeeded"] * 20, [final["error"] for final in finals]
    assert sorted(final["output"]["found"] for final in finals) == sorted(f"T{i}" for i in range(20))
    figures = plan_steps.stack_overhead(finals, "x")
    print(f"\nplan recorded after the planner's last turn, ms: {figures}")
