"""One agent end to end on the real local model: llama.cpp's server with SmolLM2-135M-Instruct answers the
agent's turns through the gateway's ``local`` deployment. The model calls the agent's tool, whose result
goes back to it, and then gives its final answer; its tokens are llama.cpp's own counts.

SmolLM2's chat template has no tools, so llama.cpp's server would drop them: the ``local`` provider asks
for each reply through a JSON schema of a call or an answer instead (``providers.local``). At temperature
0 the model calls the tool when asked to, but then calls it again rather than answering; ``last_turn:
answer`` has the last turn allowed ask for the answer (``tool_choice: none``), which the schema enforces.
"""

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow import Client

from control_plane.stack.local_model import LocalModelServer
from tests.conftest import Stack, isolated_stack
from tests.test_agents_loop import LOOKUP


@pytest.fixture(scope="module")
def local_stack(tmp_root: Path, local_model_server: LocalModelServer) -> Iterator[Stack]:
    """A stack whose control plane knows the local model server (every control plane of a stack answers
    model turns, so the session's, which does not, stays out of it), with a worker of a tenant's own."""
    with isolated_stack(tmp_root, AF_LOCAL_MODEL_URL=local_model_server.url) as running:
        yield running


@pytest.fixture(scope="module")
def tenant(local_stack: Stack) -> Iterator[tuple[str, httpx.Client]]:
    name = f"local-agent-{secrets.token_hex(3)}"
    key = asyncio.run(local_stack.tenant_key(name))
    local_stack.start_worker(tenant=name)
    with httpx.Client(base_url=local_stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        assert http.post("/v1/tools", json=LOOKUP).status_code == 201
        yield key, http


def test_an_agent_on_the_local_model_calls_its_tool_then_answers_with_the_tokens_counted(
    local_stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, http = tenant
    agent = {
        "name": "local-looker",
        "version": "1",
        "instructions": "Use the lookup tool to answer the question.",
        "model": "local",
        "temperature": 0,
        "tools": ["lookup"],
        "limits": {"max_turns": 2, "last_turn": "answer"},
    }
    assert http.post("/v1/agents", json=agent).status_code == 201
    with Client(api_url=local_stack.api_url, token=key) as af:
        started = af.start_run(agent="local-looker", input="what are tides?")
        final = af.wait_run(started["id"], timeout=180)
    assert final["state"] == "succeeded", (final["error"], [(t["step"], t["error"]) for t in final["tasks"]])
    steps = {task["step"]: task for task in final["tasks"]}
    assert list(steps) == ["turn-1", "turn-1/call-0", "turn-2"]
    (call,) = steps["turn-1"]["output"]["message"]["tool_calls"]
    assert call["function"]["name"] == "lookup"
    query = json.loads(call["function"]["arguments"])["query"]
    assert steps["turn-1/call-0"]["output"] == {"found": query.upper()}, "the sandboxed tool ran on the model's call"
    assert steps["turn-2"]["input"]["body"]["tool_choice"] == "none"
    assert isinstance(final["output"], str) and final["output"].strip(), final["output"]

    transcript: dict[str, Any] = http.get(f"/v1/runs/{final['id']}/transcript").json()
    first, second = transcript["turns"]
    assert [(c["tool"], c["state"]) for c in first["tool_calls"]] == [("lookup", "succeeded")]
    assert second["tool_calls"] == [] and second["answer"]["content"] == final["output"]
    calls = http.get("/v1/llm/calls", params={"run_id": final["id"]}).json()["items"]
    assert [(c["deployment"], c["outcome"], c["tokens_estimated"]) for c in calls] == [("local", "ok", False)] * 2
    for turn in transcript["turns"]:
        (made,) = [c for c in calls if c["turn"] == turn["turn"]]
        assert turn["usage"]["input_tokens"] == made["input_tokens"] > 0 and made["output_tokens"] > 0
    assert transcript["usage"]["turns"] == 2 and transcript["usage"]["model_calls"] == 2
    print(f"local agent: {query!r} looked up, answered {final['output']!r}; tokens {transcript['usage']}")
