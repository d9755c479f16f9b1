"""The ``anthropic`` provider against the loopback upstream speaking Anthropic's Messages protocol: the
request translated from OpenAI's shape (system, tools, tool results, JSON output, the key and version
headers), the answer and its usage translated back, whole and streamed, and an upstream that breaks."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from control_plane.errors import Refused
from control_plane.gateway import CallContext, Gateway
from tests.conftest import Stack, Upstream, apply, recorded, running_gateway

KEY = "sk-ant-test-0123456789"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a word up.",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
        },
    }
]


@pytest.fixture
async def gateway(stack: Stack, tenant: tuple[str, str]) -> AsyncIterator[Gateway]:
    """A Gateway holding the tenant's Anthropic key."""
    async with running_gateway(stack, secrets={tenant[0]: {"anthropic-key": KEY}}) as opened:
        yield opened


def claude(upstream: Upstream, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "anthropic",
        "endpoint": upstream.url(name),
        "model": "claude-test",
        "credential": "anthropic-key",
        **fields,
    }


def context(tenant: tuple[str, str]) -> CallContext:
    return CallContext(tenant=tenant[0])


async def streamed(gateway: Gateway, body: dict[str, Any], tenant: tuple[str, str]) -> list[dict[str, Any]]:
    opened = await gateway.stream({**body, "stream": True}, context=context(tenant))
    return [chunk async for chunk in opened.chunks()]


async def test_a_chat_goes_out_as_a_messages_request_and_comes_back_as_a_completion(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-plain", options={"version": "2023-06-01", "max_tokens": 321}))
    body = {
        "model": "claude-plain",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}},
                ],
            },
        ],
        "temperature": 1.5,
        "stop": "END",
    }
    answer = await gateway.chat(body, context=context(tenant))
    assert answer["model"] == "claude-plain" and answer["object"] == "chat.completion"
    (choice,) = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": "echo: look"} and choice["finish_reason"] == "stop"
    seen = upstream.seen("claude-plain")
    assert seen["headers"]["x-api-key"] == KEY and seen["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in seen["headers"]
    sent = seen["last"]
    assert sent["model"] == "claude-test" and sent["system"] == "Be brief." and sent["max_tokens"] == 321
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.invalid/cat.png"}},
            ],
        },
    ]
    assert sent["temperature"] == 1.0 and sent["stop_sequences"] == ["END"]
    assert answer["usage"]["prompt_tokens"] == 6  # the upstream's input_tokens: len("hello hi look  Be brief.") / 4
    assert answer["usage"]["completion_tokens"] == 3
    assert answer["usage"]["total_tokens"] == 9


async def test_an_answer_cut_at_its_limit_finishes_for_its_length(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-short"))
    body = {"model": "claude-short", "messages": [{"role": "user", "content": "a long answer please"}], "max_tokens": 2}
    answer = await gateway.chat(body, context=context(tenant))
    assert (
        answer["choices"][0]["message"]["content"] == "echo: a " and answer["choices"][0]["finish_reason"] == "length"
    )
    assert upstream.seen("claude-short")["last"]["max_tokens"] == 2
    chunks = await streamed(gateway, body, tenant)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["length"]


async def test_tool_calls_go_out_as_tool_use_and_their_results_as_tool_result_blocks(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-tools"))
    ask = {"role": "user", "content": "please call a tool"}
    first = await gateway.chat({"model": "claude-tools", "messages": [ask], "tools": TOOLS}, context=context(tenant))
    (choice,) = first["choices"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call == {
        "id": "toolu_up_0",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q":"please call a tool"}'},
    }
    sent = upstream.seen("claude-tools")["last"]
    assert sent["tools"] == [
        {
            "name": "lookup",
            "description": "Look a word up.",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        }
    ]
    assert "tool_choice" not in sent
    second = {
        "model": "claude-tools",
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "parallel_tool_calls": False,
        "messages": [
            ask,
            {"role": "assistant", "content": "Looking.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "found it"},
            {"role": "user", "content": "and now?"},
        ],
    }
    await gateway.chat(second, context=context(tenant))
    sent = upstream.seen("claude-tools")["last"]
    assert sent["tool_choice"] == {"type": "tool", "name": "lookup", "disable_parallel_tool_use": True}
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "please call a tool"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_up_0", "name": "lookup", "input": {"q": "please call a tool"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_up_0", "content": [{"type": "text", "text": "found it"}]},
                {"type": "text", "text": "and now?"},
            ],
        },
    ]


async def test_a_json_response_format_is_answered_through_a_forced_tool_as_text(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-json"))
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    body = {
        "model": "claude-json",
        "messages": [{"role": "user", "content": "shape it"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "shaped", "schema": schema}},
    }
    answer = await gateway.chat(body, context=context(tenant))
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert json.loads(choice["message"]["content"]) == {"q": "shape it"}
    sent = upstream.seen("claude-json")["last"]
    assert sent["tools"][0]["name"] == "json_answer" and sent["tools"][0]["input_schema"] == schema
    assert sent["tool_choice"] == {"type": "tool", "name": "json_answer"}
    chunks = await streamed(gateway, body, tenant)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    assert json.loads(text) == {"q": "shape it"}


async def test_a_stream_of_messages_events_arrives_as_openai_chunks_with_its_usage(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-stream"))
    body = {
        "model": "claude-stream",
        "messages": [{"role": "user", "content": "tell me a story"}],
        "stream_options": {"include_usage": True},
    }
    chunks = await streamed(gateway, body, tenant)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "claude-stream" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "echo: tell me a story"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]] == [
        "stop"
    ]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 6,
        "total_tokens": 10,
    }
    assert upstream.seen("claude-stream")["last"]["stream"] is True


async def test_a_streamed_tool_use_arrives_as_tool_call_deltas(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-stream-tools"))
    body = {"model": "claude-stream-tools", "messages": [{"role": "user", "content": "call a tool"}], "tools": TOOLS}
    chunks = await streamed(gateway, body, tenant)
    deltas = [d for c in chunks if c.get("choices") for d in c["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0] == {
        "index": 0,
        "id": "toolu_up_0",
        "type": "function",
        "function": {"name": "lookup", "arguments": ""},
    }
    assert len(deltas) == 3  # the start, then the input in two halves
    assert json.loads("".join(d["function"]["arguments"] for d in deltas)) == {"q": "call a tool"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_stream_cut_mid_way_ends_with_an_error_chunk_and_garbage_is_a_clean_refusal(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-broken"))
    upstream.fail("claude-broken", {"kind": "cut"})
    chunks = await streamed(
        gateway, {"model": "claude-broken", "messages": [{"role": "user", "content": "a b c"}]}, tenant
    )
    error = chunks[-1]["error"]
    assert error["code"] == "stream-interrupted" and error["message"].startswith("claude-broken: ")
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "echo:"
    upstream.fail("claude-broken", {"kind": "garbage"})
    with pytest.raises(Refused) as garbage:
        await gateway.chat(
            {"model": "claude-broken", "messages": [{"role": "user", "content": "x"}]}, context=context(tenant)
        )
    assert garbage.value.kind == "provider-error" and "not a Messages API message" in garbage.value.detail


async def test_a_deployment_without_its_key_is_refused_by_the_provider_as_an_auth_failure(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **{**claude(upstream, "claude-keyless"), "credential": None})
    with pytest.raises(Refused) as refused:
        await gateway.chat(
            {"model": "claude-keyless", "messages": [{"role": "user", "content": "x"}]}, context=context(tenant)
        )
    assert refused.value.kind == "no-healthy-deployment"
    assert "auth (HTTP 401): x-api-key header is required" in refused.value.detail


async def test_an_overloaded_anthropic_fails_over_and_an_error_event_mid_stream_ends_the_stream(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **claude(upstream, "claude-busy", tier="tier1"))
    apply(http, **claude(upstream, "claude-free", tier="tier1", order=1))
    await asyncio.to_thread(upstream.fail, "claude-busy", {"kind": "overloaded"})
    answer = await gateway.chat(
        {"model": "tier1", "messages": [{"role": "user", "content": "x"}]}, context=context(tenant)
    )
    assert answer["model"] == "claude-free"
    await asyncio.to_thread(upstream.fail, "claude-free", {"kind": "overloaded"})
    chunks = await streamed(gateway, {"model": "claude-free", "messages": [{"role": "user", "content": "a b"}]}, tenant)
    assert chunks[-1]["error"]["message"] == "claude-free: server-error: the stream failed: Overloaded"
    call = await asyncio.to_thread(recorded, http, "tier1")  # written by this gateway, off this event loop
    assert [(a["deployment"], a["outcome"], a.get("status")) for a in call["attempts"]] == [
        ("claude-busy", "server-error", 529),
        ("claude-free", "ok", None),
    ]


def test_the_official_openai_client_calls_an_anthropic_deployment_through_a_control_plane(
    stack: Stack, tenant: tuple[str, str], http: httpx.Client, upstream: Upstream
) -> None:
    http.post("/v1/secrets", json={"name": "anthropic-key", "value": KEY}).raise_for_status()
    apply(http, **claude(upstream, "claude-e2e"))
    with openai.OpenAI(base_url=f"{stack.api_url}/v1/llm", api_key=tenant[1], max_retries=0, timeout=30) as client:
        tools: Any = TOOLS
        reply = client.chat.completions.create(
            model="claude-e2e", messages=[{"role": "user", "content": "please call a tool"}], tools=tools
        )
        (call,) = reply.choices[0].message.tool_calls or []
        assert call.type == "function" and call.function.name == "lookup"
        assert json.loads(call.function.arguments) == {"q": "please call a tool"}
        chunks = list(
            client.chat.completions.create(
                model="claude-e2e",
                messages=[{"role": "user", "content": "stream it"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: stream it"
        assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3
    assert KEY not in json.dumps(recorded(http, "claude-e2e"))
