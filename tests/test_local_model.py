"""The local model through the gateway: a control plane given ``AF_LOCAL_MODEL_URL`` registers the platform's
``local`` deployment, and llama.cpp's server with SmolLM2-135M-Instruct (a real model, generating on this
machine's CPU) answers through AgentFlow's ``/v1/llm``, whole and streamed, to the official ``openai`` package,
with the tokens it counted itself, and held to a JSON schema, with tool calls where its chat template has none."""

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from bench.local_model import speed
from control_plane.gateway.documents import PLATFORM
from control_plane.gateway.settings import GatewaySettings
from control_plane.stack.local_model import LocalModelServer
from tests.conftest import Stack, running_gateway

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


@pytest.fixture(scope="module")
def local_api(stack: Stack, local_model_server: LocalModelServer) -> Iterator[str]:
    """A control plane of the session's stack that knows the local model server."""
    with stack.extra_control_plane(AF_LOCAL_MODEL_URL=local_model_server.url) as url:
        yield url


@pytest.fixture(scope="module")
def key(stack: Stack, local_api: str) -> str:
    """The tenant-admin key of a tenant of this module's own."""
    admin = {"Authorization": f"Bearer {stack.token}"}
    answer = httpx.post(f"{local_api}/v1/tenants", json={"name": f"local-{secrets.token_hex(3)}"}, headers=admin)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["admin_key"]["key"])


@pytest.fixture(scope="module")
def http(local_api: str, key: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=local_api, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def llm(local_api: str, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{local_api}/v1/llm", api_key=key, max_retries=0, timeout=60) as client:
        yield client


def recorded(http: httpx.Client, stream: bool) -> dict[str, Any]:
    """The newest recorded call of ``local`` streamed or not (records are written a moment after the answer)."""
    deadline = time.monotonic() + 10
    while True:
        items = http.get("/v1/llm/calls", params={"limit": 5}).json()["items"]
        found = [call for call in items if call["requested"] == "local" and call["stream"] is stream]
        if found:
            call: dict[str, Any] = found[0]
            return call
        assert time.monotonic() < deadline, "no call of local recorded"
        time.sleep(0.05)


def test_the_platform_local_deployment_is_registered_for_every_tenant(http: httpx.Client) -> None:
    item = http.get("/v1/models/local").json()
    assert item["scope"] == "platform", item
    assert item["spec"]["provider"] == "local" and "endpoint" not in item["spec"]
    assert item["health"]["state"] == "healthy"


def test_the_local_model_answers_through_the_gateway_with_the_tokens_it_counted(
    llm: openai.OpenAI, http: httpx.Client
) -> None:
    reply = llm.chat.completions.create(model="local", messages=QUESTION, max_tokens=24, temperature=0)
    choice = reply.choices[0]
    assert reply.model == "local" and choice.finish_reason in ("stop", "length")
    assert choice.message.content and choice.message.content.strip(), reply
    usage = reply.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    call = recorded(http, stream=False)
    assert call["deployment"] == "local" and call["outcome"] == "ok"
    assert (call["input_tokens"], call["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert call["tokens_estimated"] is False, "llama.cpp reports its own counts"
    assert call["response"]["choices"][0]["message"]["content"] == choice.message.content


def test_the_local_model_streams_its_answer_chunk_by_chunk_with_usage(llm: openai.OpenAI, http: httpx.Client) -> None:
    chunks = list(
        llm.chat.completions.create(
            model="local",
            messages=QUESTION,
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1, "a streamed answer arrives in more than one piece"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
        ["stop"],
        ["length"],
    )
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 24
    call = recorded(http, stream=True)
    assert call["outcome"] == "ok" and call["ttft_ms"] is not None and call["tokens_estimated"] is False
    assert call["response"]["choices"][0]["message"]["content"] == "".join(pieces)


LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Looks a query up",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


def test_the_local_model_held_to_a_schema_answers_a_tool_call_whole_and_streamed(llm: openai.OpenAI) -> None:
    asked: dict[str, Any] = {
        "model": "local",
        "messages": [{"role": "user", "content": "Look up the capital of France."}],
        "tools": [LOOKUP],
        "tool_choice": "required",
        "temperature": 0,
    }
    reply = llm.chat.completions.create(**asked)
    (call,) = reply.choices[0].message.tool_calls or []
    assert reply.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    assert isinstance(json.loads(call.function.arguments)["query"], str)
    chunks = list(llm.chat.completions.create(**asked, stream=True))
    calls = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.function.name, d.function.arguments) for d in calls if d.function] == [
        ("lookup", call.function.arguments)
    ], "the same call, in one piece"
    answered = llm.chat.completions.create(**{**asked, "tool_choice": "none"})
    assert answered.choices[0].finish_reason == "stop" and answered.choices[0].message.content
    assert not answered.choices[0].message.tool_calls


def test_a_tenants_own_local_deployment_in_a_tier_answers_for_that_tier(http: httpx.Client, llm: openai.OpenAI) -> None:
    answer = http.post("/v1/models", json={"name": "local-light", "provider": "local", "tier": "tier1"})
    assert answer.status_code == 201, answer.text
    reply = llm.chat.completions.create(model="tier1", messages=QUESTION, max_tokens=8)
    assert reply.model == "local-light" and reply.choices[0].message.content


async def test_the_bench_measures_the_local_models_speed_through_the_gateway(local_api: str, key: str) -> None:
    figures = await speed(f"{local_api}/v1/llm", key=key, max_tokens=16, runs=1)
    assert 1 < figures["tokens"] <= 16 and figures["tokens_per_second"] > 0 and figures["ttft_ms"] > 0, figures


async def test_a_change_to_the_local_deployment_stands_when_a_control_plane_starts_again(
    stack: Stack, local_model_server: LocalModelServer, http: httpx.Client
) -> None:
    admin = {"Authorization": f"Bearer {stack.token}"}
    changed = {"name": "local", "provider": "local", "context_window": 1024}  # the window of the test's server
    answer = await asyncio.to_thread(http.post, "/v1/models", params={"scope": "platform"}, json=changed, headers=admin)
    assert answer.status_code == 200 and answer.json()["outcome"] == "updated", answer.text
    async with running_gateway(stack, GatewaySettings(local_model_url=local_model_server.url)) as opened:
        assert (await opened.deployments.visible(PLATFORM))["local"].spec.context_window == 1024
