"""An agent run end to end on the real stack: its model turns go from a worker through the bus to the model
gateway (the scripted mock provider), the tool calls it asks for run as sandboxed tasks, their results go back
to the model, and the final answer ends the run; invalid tool calls go back to the model, `max_turns` and the
output schema end a loop that does not converge, a repeated turn is answered from the gateway's record,
a call of a tool that needs approval waits, visibly, for a human's `approve` signal, a sub-agent runs
as a tool call with its loop nested under the call, and a handoff passes the conversation on."""

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from agentflow import AsyncClient, Client, Transcript, document

from bus.states import TaskState
from control_plane.planning.agent import AgentLoop, AgentTool, compile_instructions
from control_plane.planning.model import AwaitSignal, StepState, ToolCall
from tests.conftest import Af, Stack

LOOKUP = {
    "name": "lookup",
    "version": "1",
    "description": "Looks a query up and answers what it found",
    "runtime": {
        "command": [
            "python3",
            "-c",
            "import json, sys; q = json.load(sys.stdin)['query']; print(json.dumps({'found': q.upper()}))",
        ]
    },
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Iterator[tuple[str, str, httpx.Client]]:
    """A tenant of this module's own, with a worker, the lookup tool and its key."""
    name = f"loop-{secrets.token_hex(3)}"
    key = asyncio.run(stack.tenant_key(name))
    worker = stack.start_worker(tenant=name)
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        assert http.post("/v1/tools", json=LOOKUP).status_code == 201
        yield name, key, http
    worker.terminate()
    worker.wait(30)


def _model(http: httpx.Client, name: str, turns: list[dict[str, Any]]) -> None:
    answer = http.post("/v1/models", json={"name": name, "provider": "mock", "options": {"turns": turns}})
    assert answer.is_success, answer.text


def _lookup_then_answer(http: httpx.Client, name: str, query: str, answer: str) -> None:
    """Model ``name``: its first turn looks ``query`` up, its second answers ``answer``."""
    _model(http, name, [{"tool_calls": [{"name": "lookup", "arguments": {"query": query}}]}, {"content": answer}])


def _agent(http: httpx.Client, **fields: Any) -> None:
    answer = http.post("/v1/agents", json={"version": "1", "instructions": "Answer {{$.input.question}}"} | fields)
    assert answer.status_code == 201, answer.text


def _run(stack: Stack, key: str, agent: str, question: str) -> dict[str, Any]:
    with Client(api_url=stack.api_url, token=key) as af:
        started = af.start_run(agent=agent, input={"question": question})
        return af.wait_run(started["id"], timeout=90)


def _succeeded(final: dict[str, Any]) -> None:
    assert final["state"] == "succeeded", (
        final["error"],
        [(t["step"], t["state"], t["error"]) for t in final["tasks"]],
    )


def test_an_agent_calls_its_tool_in_a_sandbox_and_answers_with_what_the_tool_found(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _lookup_then_answer(http, "script-lookup", "tides", "They are TIDES.")
    _agent(http, name="looker", model="script-lookup", tools=["lookup"])
    final = _run(stack, key, "looker", "what are tides?")
    _succeeded(final)
    assert final["agent"] == "looker@1" and final["output"] == "They are TIDES."
    steps = {task["step"]: task for task in final["tasks"]}
    assert list(steps) == ["turn-1", "turn-1/call-0", "turn-2"]
    assert steps["turn-1/call-0"]["output"] == {"found": "TIDES"}
    assert steps["turn-1/call-0"]["sandbox"]["kind"] != "builtin"
    second = steps["turn-2"]["input"]["body"]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "tool"]
    assert second[0]["content"] == "Answer what are tides?"
    assert second[3]["content"] == '{"found":"TIDES"}'
    assert final["usage"]["input_tokens"] > 0
    calls = http.get("/v1/llm/calls", params={"run_id": final["id"]}).json()["items"]
    assert len(calls) == 2 and {call["caller"] for call in calls} == {"agent:looker@1"}


def test_an_invalid_tool_call_goes_back_to_the_model_which_then_answers(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _model(
        http,
        "script-wrong",
        [
            {"tool_calls": [{"name": "nosuch", "arguments": {}}, {"name": "lookup", "arguments": {"q": 1}}]},
            {"content": "I could not look it up."},
        ],
    )
    _agent(http, name="fumbler", model="script-wrong", tools=["lookup"])
    final = _run(stack, key, "fumbler", "anything")
    _succeeded(final)
    steps = [task["step"] for task in final["tasks"]]
    assert steps == ["turn-1", "turn-2"]  # neither call ran
    results = final["tasks"][1]["input"]["body"]["messages"][3:]
    assert "there is no tool 'nosuch'" in results[0]["content"]
    assert "do not match its input schema" in results[1]["content"]


def test_an_agent_that_never_stops_calling_tools_fails_at_max_turns_even_asked_to_answer_at_the_last(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _model(http, "script-loop", [{"tool_calls": [{"name": "lookup", "arguments": {"query": "again"}}]}])
    _agent(http, name="looper", model="script-loop", tools=["lookup"], limits={"max_turns": 2})
    final = _run(stack, key, "looper", "loop")
    assert final["state"] == "failed" and final["error"].startswith("max-turns"), final
    assert [task["step"] for task in final["tasks"]] == ["turn-1", "turn-1/call-0", "turn-2", "turn-2/call-0"]
    assert all("tool_choice" not in task["input"]["body"] for task in final["tasks"][::2])
    # Asked for the answer at its last turn (the mock's script does not listen), it still fails there.
    _agent(http, name="pressed", model="script-loop", tools=["lookup"], limits={"max_turns": 2, "last_turn": "answer"})
    final = _run(stack, key, "pressed", "loop")
    assert final["state"] == "failed" and final["error"].startswith("max-turns"), final
    turns = [task for task in final["tasks"] if "/" not in task["step"]]
    assert [turn["input"]["body"].get("tool_choice") for turn in turns] == [None, "none"]


def test_an_answer_that_misses_the_output_schema_gets_one_repair_turn_then_fails(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    schema = {"type": "object", "required": ["verdict"]}
    _model(http, "script-repaired", [{"content": "not json"}, {"content": '{"verdict": "ok"}'}])
    _agent(http, name="repaired", model="script-repaired", output_schema=schema)
    fixed = _run(stack, key, "repaired", "judge")
    assert fixed["state"] == "succeeded" and fixed["output"] == {"verdict": "ok"}, fixed
    repair = fixed["tasks"][1]["input"]["body"]["messages"][-1]
    assert repair["role"] == "user" and "not JSON" in repair["content"]
    _model(http, "script-stubborn", [{"content": '{"other": 1}'}])
    _agent(http, name="stubborn", model="script-stubborn", output_schema=schema)
    failed = _run(stack, key, "stubborn", "judge")
    assert failed["state"] == "failed" and "'verdict' is a required property" in failed["error"], failed


def test_a_model_turn_for_a_tier_with_no_deployment_fails_the_run_with_the_gateway_reason(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _model(http, "script-brief", [{"content": "fine"}])
    _agent(http, name="orphan", model="script-brief")
    http.delete("/v1/models/script-brief")
    final = _run(stack, key, "orphan", "hello?")
    assert final["state"] == "failed" and "model-not-found" in final["error"], final


def test_the_loop_rebuilds_the_conversation_from_the_records_and_never_restarts_a_started_key() -> None:
    loop = AgentLoop(
        name="a",
        version="1",
        instructions=compile_instructions("Be brief."),
        model="tier1",
        tools={},
        model_queue="default",
        max_turns=3,
    )
    first = loop.decide("hi", {})
    assert [start.key for start in first.start] == ["turn-1"]
    running = {"turn-1": StepState(TaskState.RUNNING, step="turn")}
    assert loop.decide("hi", running).start == () and loop.decide("hi", running).outcome is None
    answered = {"turn-1": StepState(TaskState.SUCCEEDED, {"message": {"role": "assistant", "content": "ok"}})}
    outcome = loop.decide("hi", answered).outcome
    assert outcome is not None and outcome.output == "ok"


def _waiting(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """What the run waits for, once it waits for something."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = http.get(f"/v1/runs/{run_id}").json()
        if run["waiting"]:
            return list(run["waiting"])
        assert run["state"] == "running", run
        time.sleep(0.05)
    pytest.fail(f"run {run_id} never waited")


def _careful(http: httpx.Client, key: str, name: str, stack: Stack) -> str:
    """A run of agent ``name``, whose one lookup needs approval, once it waits for it."""
    _lookup_then_answer(http, f"script-{name}", "tides", "answered")
    _agent(http, name=name, model=f"script-{name}", tools=["lookup"], approval=["lookup"])
    with Client(api_url=stack.api_url, token=key) as af:
        run_id = str(af.start_run(agent=name, input={"question": "tides?"})["id"])
    assert _waiting(http, run_id) == [
        {
            "step": "turn-1/approve-0",
            "signals": ["approve"],
            "match": {"call": "turn-1/call-0"},
            "about": {"call": "turn-1/call-0", "tool": "lookup", "arguments": {"query": "tides"}},
        }
    ]
    return run_id


def test_a_call_that_needs_approval_waits_visibly_and_runs_once_approved_with_af_signal(
    stack: Stack, tenant: tuple[str, str, httpx.Client], af: Af
) -> None:
    _, key, http = tenant
    run_id = _careful(http, key, "careful", stack)
    shown = af("runs", "get", run_id, AF_TOKEN=key)
    assert 'waiting  approve {"call": "turn-1/call-0"} (step turn-1/approve-0)' in shown.stdout, shown.stdout
    with Client(api_url=stack.api_url, token=key) as client:
        waits = [e for e in client.events(run_id, idle_timeout=1.0) if e["type"] == "signal.waiting"]
    assert waits[0]["data"]["about"]["tool"] == "lookup"
    other = http.post(f"/v1/runs/{run_id}/signal", json={"name": "approve", "data": {"call": "x", "approved": True}})
    assert other.status_code == 409 and other.json()["field"] == "data", other.json()
    vague = {"name": "approve", "data": {"call": "turn-1/call-0", "approved": "yes"}}
    answer = http.post(f"/v1/runs/{run_id}/signal", json=vague)
    assert answer.status_code == 422 and "data.approved" in answer.json()["detail"], answer.json()
    approve = json.dumps({"call": "turn-1/call-0", "approved": True})
    sent = af("signal", run_id, "approve", "--data", approve, AF_TOKEN=key)
    assert sent.returncode == 0 and "taken by step turn-1/approve-0" in sent.stdout, sent.stderr
    final = _wait(stack, key, run_id)
    assert final["state"] == "succeeded" and final["output"] == "answered", final
    assert [t["step"] for t in final["tasks"]] == ["turn-1", "turn-1/approve-0", "turn-1/call-0", "turn-2"]
    assert final["tasks"][2]["output"] == {"found": "TIDES"} and final["waiting"] == []
    (call,) = http.get(f"/v1/runs/{run_id}/transcript").json()["turns"][0]["tool_calls"]
    assert call["approval"]["decision"] == {"call": "turn-1/call-0", "approved": True}
    with Client(api_url=stack.api_url, token=key) as client:
        (typed,) = client.get_transcript(run_id).turns[0].tool_calls
    assert typed.approval is not None and typed.approval.step == "turn-1/approve-0"
    assert typed.approval.decision == {"call": "turn-1/call-0", "approved": True} and typed.state == "succeeded"


def test_a_rejected_call_is_not_run_and_the_rejection_goes_back_to_the_model(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    run_id = _careful(http, key, "wary", stack)
    reject = {"call": "turn-1/call-0", "approved": False, "note": "not today"}
    assert http.post(f"/v1/runs/{run_id}/signal", json={"name": "approve", "data": reject}).status_code == 202
    final = _wait(stack, key, run_id)
    assert final["state"] == "succeeded", final
    assert [t["step"] for t in final["tasks"]] == ["turn-1", "turn-1/approve-0", "turn-2"]
    result = json.loads(final["tasks"][2]["input"]["body"]["messages"][-1]["content"])
    assert result == {"error": "rejected: a reviewer did not approve this call", "note": "not today"}


def _wait(stack: Stack, key: str, run_id: str) -> dict[str, Any]:
    with Client(api_url=stack.api_url, token=key) as af:
        return af.wait_run(run_id, timeout=90)


def test_the_loop_waits_for_an_approval_before_a_call_and_hands_back_a_failed_wait() -> None:
    tool = AgentTool(name="rm", version="1", queue="default", description="", parameters={"type": "object"})
    loop = AgentLoop(
        name="a",
        version="1",
        instructions=compile_instructions("Be careful."),
        model="tier1",
        tools={"rm": tool},
        model_queue="default",
        max_turns=3,
        approval=frozenset({"rm"}),
    )
    assert loop.signals == frozenset({"approve"})
    call = {"id": "c1", "function": {"name": "rm", "arguments": "{}"}}
    asked = {"turn-1": StepState(TaskState.SUCCEEDED, {"message": {"content": None, "tool_calls": [call]}})}
    (wait,) = loop.decide("hi", asked).start
    assert wait.key == "turn-1/approve-0" and isinstance(wait.action, AwaitSignal)
    assert wait.action.match == {"call": "turn-1/call-0"}
    approved = asked | {wait.key: StepState(TaskState.SUCCEEDED, {"signal": "approve", "data": {"approved": True}})}
    assert [start.key for start in loop.decide("hi", approved).start] == ["turn-1/call-0"]
    timed_out = asked | {wait.key: StepState(TaskState.FAILED, error="timed out waiting for a signal (approve)")}
    (turn,) = loop.decide("hi", timed_out).start
    assert isinstance(turn.action, ToolCall)
    assert "not approved: timed out" in turn.action.input["body"]["messages"][-1]["content"]


def test_the_transcript_shows_each_turn_with_its_messages_tool_calls_tokens_and_cost(
    stack: Stack, tenant: tuple[str, str, httpx.Client], af: Af
) -> None:
    _, key, http = tenant
    _lookup_then_answer(http, "script-told", "tides", "They are TIDES.")
    _agent(http, name="teller", model="script-told", tools=["lookup"])
    final = _run(stack, key, "teller", "what are tides?")
    assert final["state"] == "succeeded", final
    transcript = http.get(f"/v1/runs/{final['id']}/transcript").json()
    first, second = transcript["turns"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert first["tool_calls"] == [
        {
            "id": "call_0_0",
            "tool": "lookup",
            "arguments": {"query": "tides"},
            "step": "turn-1/call-0",
            "state": "succeeded",
            "result": {"found": "TIDES"},
        }
    ]
    assert [m["role"] for m in second["messages"]] == ["tool"] and second["tool_calls"] == []
    assert second["answer"]["content"] == "They are TIDES." and second["model"] == "script-told"
    calls = http.get("/v1/llm/calls", params={"run_id": final["id"]}).json()["items"]
    for turn in transcript["turns"]:
        (call,) = [c for c in calls if c["turn"] == turn["turn"]]
        assert turn["usage"]["input_tokens"] == call["input_tokens"] > 0
        assert turn["usage"]["cost_usd"] == call["cost_usd"]
    assert transcript["usage"]["turns"] == 2 and transcript["usage"]["model_calls"] == 2
    assert transcript["usage"]["input_tokens"] == sum(c["input_tokens"] for c in calls)
    shown = af("runs", "get", final["id"], "--transcript", AF_TOKEN=key)
    assert shown.returncode == 0, shown.stderr
    assert '  -> lookup {"query": "tides"} [succeeded]\n     = {"found":"TIDES"}' in shown.stdout, shown.stdout
    assert "2 turns, 2 model calls" in shown.stdout
    with Client(api_url=stack.api_url, token=key) as client:
        ended = [e["data"] for e in client.events(final["id"]) if e["type"] == "task.succeeded"]
    assert ended[0]["turn"]["tool_calls"] == [{"tool": "lookup", "arguments": '{"query":"tides"}'}]
    assert ended[-1]["turn"]["content"] == "They are TIDES."
    with Client(api_url=stack.api_url, token=key) as client:
        alone = client.start_run(tool="lookup", input={"query": "x"})["id"]
    refused = http.get(f"/v1/runs/{alone}/transcript")
    assert refused.status_code == 409 and refused.json()["type"].endswith("not-an-agent-run"), refused.json()

    # The SDK's answer is typed, the same from both clients, and its document is the API's.
    with Client(api_url=stack.api_url, token=key) as client:
        typed = client.get_transcript(final["id"])
    assert asyncio.run(_transcript_async(stack, key, final["id"])) == typed
    assert isinstance(typed, Transcript) and document(typed) == transcript
    assert typed.turns[0].tool_calls[0].result == {"found": "TIDES"} and typed.turns[0].tool_calls[0].approval is None
    assert typed.turns[1].answer is not None and typed.turns[1].answer["content"] == "They are TIDES."
    assert (typed.usage.turns, typed.usage.model_calls, typed.agent) == (2, 2, "teller@1")


async def _transcript_async(stack: Stack, key: str, run_id: str) -> Transcript:
    async with AsyncClient(api_url=stack.api_url, token=key) as client:
        return await client.get_transcript(run_id)


def _workflow(http: httpx.Client, document: dict[str, Any]) -> None:
    answer = http.post("/v1/workflows", json=document)
    assert answer.status_code == 201, answer.text


def _started(stack: Stack, key: str, workflow: str, data: Any) -> dict[str, Any]:
    with Client(api_url=stack.api_url, token=key) as af:
        return af.wait_run(af.start_run(workflow=workflow, input=data)["id"], timeout=90)


def test_an_agent_step_of_a_dag_runs_its_loop_under_its_key_and_later_steps_read_its_answer(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _lookup_then_answer(http, "script-dag", "moon", "the moon")
    _agent(http, name="dag-agent", model="script-dag", tools=["lookup"])
    _workflow(
        http,
        {
            "name": "research-then-lookup",
            "version": "1",
            "kind": "dag",
            "steps": [
                {"name": "research", "agent": "dag-agent", "input": {"question": "$.input.topic"}},
                {
                    "name": "check",
                    "tool": "lookup",
                    "needs": ["research"],
                    "input": {"query": "$.steps.research.output"},
                },
            ],
            "output": "$.steps.check.output",
        },
    )
    stored = http.get("/v1/workflows/research-then-lookup/versions/1").json()["spec"]
    assert stored["pins"] == {"agent:dag-agent": "1", "lookup": "1"}
    final = _started(stack, key, "research-then-lookup", {"topic": "tides"})
    _succeeded(final)
    assert final["output"] == {"found": "THE MOON"}
    steps = {task["step"]: task for task in final["tasks"]}
    assert set(steps) == {"research", "research/turn-1", "research/turn-1/call-0", "research/turn-2", "check"}
    assert steps["research"]["tool"] == "@agent@1" and steps["research"]["output"] == "the moon"
    assert steps["research/turn-1"]["input"]["body"]["messages"][1]["content"] == '{"question":"tides"}'


def test_an_agent_state_of_an_fsm_and_an_agent_leaf_of_a_behavior_tree_run_their_loops(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _model(http, "script-brief-answer", [{"content": "done"}])
    _agent(http, name="brief", model="script-brief-answer")
    _workflow(
        http,
        {
            "name": "fsm-with-agent",
            "version": "1",
            "kind": "fsm",
            "initial": "think",
            "states": {
                "think": {"agent": "brief", "input": {"question": "$.input.q"}, "transitions": [{"to": "end"}]},
                "end": {"final": True, "output": "$.steps.think.output"},
            },
        },
    )
    fsm = _started(stack, key, "fsm-with-agent", {"q": "why?"})
    assert fsm["state"] == "succeeded" and fsm["output"] == "done", fsm
    _workflow(
        http,
        {
            "name": "bt-with-agent",
            "version": "1",
            "kind": "bt",
            "root": {"sequence": [{"name": "ask", "agent": "brief", "input": {"question": "$.input.q"}}]},
            "output": "$.steps.ask.output",
        },
    )
    tree = _started(stack, key, "bt-with-agent", {"q": "how?"})
    assert tree["state"] == "succeeded" and tree["output"] == "done", tree
    refused = http.post(
        "/v1/workflows",
        json={"name": "ghost", "version": "1", "kind": "dag", "steps": [{"name": "a", "agent": "nobody"}]},
    )
    assert refused.status_code == 422 and refused.json()["type"].endswith("unknown-agent"), refused.text
    assert refused.json()["field"] == "steps[0].agent"


def test_a_coordinator_calls_a_research_sub_agent_which_calls_a_tool_and_answers_with_its_result(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _model(
        http,
        "script-researcher",
        [{"tool_calls": [{"name": "lookup", "arguments": {"query": "tides"}}]}, {"content": "found TIDES"}],
    )
    _agent(http, name="sub-researcher", model="script-researcher", tools=["lookup"], description="Researches")
    _model(
        http,
        "script-coordinator",
        [
            {"tool_calls": [{"name": "sub-researcher", "arguments": {"input": {"question": "tides"}}}]},
            {"content": "The research says: found TIDES"},
        ],
    )
    _agent(http, name="coordinator", model="script-coordinator", agents=["sub-researcher"])
    final = _run(stack, key, "coordinator", "what are tides?")
    _succeeded(final)
    assert final["output"] == "The research says: found TIDES"
    steps = {task["step"]: task for task in final["tasks"]}
    assert set(steps) == {
        "turn-1",
        "turn-1/call-0",
        "turn-1/call-0/turn-1",
        "turn-1/call-0/turn-1/call-0",
        "turn-1/call-0/turn-2",
        "turn-2",
    }
    call = steps["turn-1/call-0"]
    assert call["tool"] == "@agent@1" and call["state"] == "succeeded" and call["output"] == "found TIDES"
    assert call["input"] == {"agent": "sub-researcher@1", "input": {"question": "tides"}}
    assert steps["turn-1/call-0/turn-1/call-0"]["output"] == {"found": "TIDES"}
    assert steps["turn-1/call-0/turn-1"]["input"]["body"]["messages"][1]["content"] == '{"question":"tides"}'
    offered = steps["turn-1"]["input"]["body"]["tools"][0]["function"]
    assert offered["name"] == "sub-researcher" and offered["description"] == "Researches"
    assert steps["turn-2"]["input"]["body"]["messages"][-1]["content"] == "found TIDES"
    calls = http.get("/v1/llm/calls", params={"run_id": final["id"]}).json()["items"]
    assert sorted(call["caller"] for call in calls) == [
        "agent:coordinator@1",
        "agent:coordinator@1",
        "agent:sub-researcher@1",
        "agent:sub-researcher@1",
    ]


def test_a_triage_agent_hands_off_to_a_specialist_whose_answer_is_the_runs(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    # The mock answers turns[k], k the assistant messages so far: the specialist's first turn is k = 1.
    _model(http, "script-specialist", [{"content": "unused"}, {"content": "Reset your router."}])
    _agent(
        http,
        name="specialist",
        model="script-specialist",
        instructions="You fix networks.",
        description="Network problems",
    )
    _model(http, "script-triage", [{"tool_calls": [{"name": "handoff_to_specialist", "arguments": {}}]}])
    _agent(http, name="triage", model="script-triage", handoffs=["specialist"])
    final = _run(stack, key, "triage", "my wifi is down")
    _succeeded(final)
    assert final["output"] == "Reset your router."
    steps = {task["step"]: task for task in final["tasks"]}
    assert list(steps) == ["turn-1", "turn-2"]
    assert [steps[k]["input"]["agent"] for k in steps] == ["triage@1", "specialist@1"]
    handed = steps["turn-2"]["input"]["body"]["messages"]
    assert handed[0] == {"role": "system", "content": "You fix networks."}
    assert [m["role"] for m in handed] == ["system", "user", "assistant", "tool"]
    assert handed[3]["content"] == '{"handoff":"specialist"}'
    offered = steps["turn-1"]["input"]["body"]["tools"][0]["function"]
    assert offered["name"] == "handoff_to_specialist"


def test_a_sub_agent_that_fails_at_max_turns_comes_back_to_its_caller_as_an_error_result(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _model(http, "script-spinner", [{"tool_calls": [{"name": "lookup", "arguments": {"query": "again"}}]}])
    _agent(http, name="spinner", model="script-spinner", tools=["lookup"], limits={"max_turns": 1})
    _model(
        http,
        "script-delegator",
        [
            {"tool_calls": [{"name": "spinner", "arguments": {"input": {"question": "spin"}}}]},
            {"content": "The helper gave up."},
        ],
    )
    _agent(http, name="delegator", model="script-delegator", agents=["spinner"])
    final = _run(stack, key, "delegator", "anything")
    _succeeded(final)
    assert final["output"] == "The helper gave up."
    steps = {task["step"]: task for task in final["tasks"]}
    assert steps["turn-1/call-0"]["state"] == "failed" and steps["turn-1/call-0"]["error"].startswith("max-turns")
    result = steps["turn-2"]["input"]["body"]["messages"][-1]
    assert result["role"] == "tool" and "max-turns" in result["content"]


def test_an_agent_step_of_a_workflow_waits_for_approval_under_its_key_and_has_its_own_transcript(
    stack: Stack, tenant: tuple[str, str, httpx.Client]
) -> None:
    _, key, http = tenant
    _lookup_then_answer(http, "script-nested-careful", "tides", "answered")
    _agent(http, name="nested-careful", model="script-nested-careful", tools=["lookup"], approval=["lookup"])
    step = {"name": "research", "agent": "nested-careful", "input": {"question": "$.input.q"}}
    _workflow(http, {"name": "careful-dag", "version": "1", "kind": "dag", "steps": [step]})
    with Client(api_url=stack.api_url, token=key) as af:
        run_id = str(af.start_run(workflow="careful-dag", input={"q": "tides?"})["id"])
    (wait,) = _waiting(http, run_id)
    assert wait["step"] == "research/turn-1/approve-0" and wait["match"] == {"call": "research/turn-1/call-0"}
    approval = {"name": "approve", "data": {"call": "research/turn-1/call-0", "approved": True}}
    assert http.post(f"/v1/runs/{run_id}/signal", json=approval).status_code == 202
    final = _wait(stack, key, run_id)
    assert final["state"] == "succeeded", final
    assert "research/turn-1/call-0" in [t["step"] for t in final["tasks"]]
    transcript = http.get(f"/v1/runs/{run_id}/transcript", params={"step": "research"}).json()
    assert (transcript["step"], transcript["agent"], transcript["output"]) == (
        "research",
        "nested-careful@1",
        "answered",
    )
    (call,) = transcript["turns"][0]["tool_calls"]
    assert call["step"] == "research/turn-1/call-0" and call["result"] == {"found": "TIDES"}
    assert call["approval"]["decision"]["approved"] is True
    assert http.get(f"/v1/runs/{run_id}/transcript").status_code == 409
    unknown = http.get(f"/v1/runs/{run_id}/transcript", params={"step": "nope"})
    assert unknown.status_code == 404 and unknown.json()["field"] == "step", unknown.json()
