"""The model gateway against the real stack: deployments applied and listed, the mock provider's script,
the openai provider against the loopback upstream (whole, streamed, tools, embeddings) through the official
``openai`` package, tiers failing over down their chain, every call recorded with its attempts (in full or
as metadata), one tenant never reaching another's models, and ``AF_NO_LLM``."""

import asyncio
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from agentflow import Client
from agentflow.cli import cli
from click.testing import CliRunner

from control_plane.errors import NotFound
from control_plane.gateway import CallContext, Gateway
from registry import connect as connect_db
from registry import llm_calls
from tests.conftest import (
    Stack,
    Upstream,
    apply,
    as_key,
    eventually,
    expect_problem,
    recorded,
    running_gateway,
    upstream_model,
)

# --- deployments as documents -----------------------------------------------------------------------


def test_a_deployment_document_is_checked_with_every_problem_at_its_field(http: httpx.Client) -> None:
    answer = http.post(
        "/v1/models",
        json={"name": "Bad Name", "provider": "openai", "tier": "tier9", "context_window": 0, "colour": "red"},
    )
    problem = expect_problem(answer, 422, "invalid-model")
    fields = {p["field"] for p in problem["problems"]}
    assert {"name", "tier", "context_window", "colour", "endpoint"} <= fields, problem
    expect_problem(
        http.post("/v1/models", json={"name": "m", "provider": "smoke-signals"}), 422, "invalid-model", "provider"
    )
    answer = http.post("/v1/models", json={"name": "m", "provider": "mock", "options": {"fail": "sometimes"}})
    expect_problem(answer, 422, "invalid-model", "options.fail")


def test_a_deployment_is_created_then_updated_in_place_and_listed_in_its_tier(http: httpx.Client) -> None:
    first = http.post("/v1/models", json={"name": "listed", "provider": "mock", "tier": "tier3", "order": 5})
    assert first.status_code == 201 and first.json()["outcome"] == "created", first.text
    again = http.post("/v1/models", json={"name": "listed", "provider": "mock", "tier": "tier3", "order": 5})
    assert again.status_code == 200 and again.json()["outcome"] == "unchanged"
    changed = http.post("/v1/models", json={"name": "listed", "provider": "mock", "tier": "tier3", "order": 1})
    assert changed.json()["outcome"] == "updated"
    listing = http.get("/v1/models").json()
    (item,) = [i for i in listing["items"] if i["name"] == "listed"]
    assert item["scope"] == "tenant" and item["spec"]["order"] == 1
    assert item["health"]["state"] == "healthy" and item["health"]["calls_last_minute"] == 0
    assert "listed" in listing["tiers"]["tier3"]


def test_only_a_platform_admin_applies_a_platform_deployment_and_every_tenant_sees_it(
    stack: Stack, http: httpx.Client
) -> None:
    name = f"shared-{secrets.token_hex(3)}"
    refused = http.post("/v1/models", params={"scope": "platform"}, json={"name": name, "provider": "mock"})
    expect_problem(refused, 403, "forbidden")
    with as_key(stack, stack.token) as admin:
        made = admin.post("/v1/models", params={"scope": "platform"}, json={"name": name, "provider": "mock"})
        assert made.status_code == 201, made.text
        try:
            item = http.get(f"/v1/models/{name}").json()
            assert item["scope"] == "platform"
        finally:
            admin.delete(f"/v1/models/{name}", params={"scope": "platform"})


def test_one_tenant_cannot_see_or_call_another_tenants_models(
    stack: Stack, http: httpx.Client, llm: openai.OpenAI
) -> None:
    apply(http, name="private-model", provider="mock", options={"answers": {"hi": "secret answer"}})
    with as_key(stack, stack.token) as admin:
        other = admin.post("/v1/tenants", json={"name": f"gw-other-{secrets.token_hex(3)}"}).json()["admin_key"]["key"]
    with as_key(stack, other) as intruder:
        assert "private-model" not in [i["name"] for i in intruder.get("/v1/models").json()["items"]]
        expect_problem(intruder.get("/v1/models/private-model"), 404, "model-not-found")
        answer = intruder.post(
            "/v1/llm/chat/completions", json={"model": "private-model", "messages": [{"role": "user", "content": "hi"}]}
        )
        expect_problem(answer, 404, "model-not-found", "model")
    reply = llm.chat.completions.create(model="private-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "secret answer"


# --- the mock provider ------------------------------------------------------------------------------


def test_the_mock_answers_its_script_turn_by_turn_with_tool_calls(http: httpx.Client, llm: openai.OpenAI) -> None:
    turns = [{"tool_calls": [{"name": "search", "arguments": {"q": "nats"}}]}, {"content": "done searching"}]
    apply(http, name="scripted", provider="mock", options={"turns": turns})
    tools: Any = [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]
    first = llm.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "find it"}], tools=tools
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and first.model == "scripted"
    (call,) = choice.message.tool_calls or []
    assert call.id == "call_0_0" and call.function.name == "search" and call.function.arguments == '{"q":"nats"}'
    second = llm.chat.completions.create(
        model="scripted",
        tools=tools,
        messages=[
            {"role": "user", "content": "find it"},
            {"role": "assistant", "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "found"},
        ],
    )
    assert second.choices[0].message.content == "done searching"
    assert second.usage is not None and second.usage.prompt_tokens > 0 and second.usage.completion_tokens > 0


def test_the_mock_echoes_answers_by_prompt_and_follows_a_json_schema(http: httpx.Client, llm: openai.OpenAI) -> None:
    apply(http, name="echo", provider="mock", options={"answers": {"ping": "pong"}})
    ask = llm.chat.completions.create
    assert ask(model="echo", messages=[{"role": "user", "content": "ping"}]).choices[0].message.content == "pong"
    echoed = ask(model="echo", messages=[{"role": "user", "content": "hello there"}])
    assert echoed.choices[0].message.content == "mock: hello there"
    schema = {
        "type": "object",
        "properties": {"verdict": {"enum": ["approve", "reject"]}, "score": {"type": "integer", "minimum": 3}},
        "required": ["verdict", "score"],
    }
    shaped = ask(
        model="echo",
        messages=[{"role": "user", "content": "judge"}],
        response_format={"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}},
    )
    assert shaped.choices[0].message.content == '{"verdict":"approve","score":3}'


def test_a_fault_on_demand_fails_over_to_the_next_deployment_of_the_tier(http: httpx.Client) -> None:
    apply(http, name="flaky-mock", provider="mock", tier="tier1", order=0, options={"fail": "500"})
    apply(http, name="steady-mock", provider="mock", tier="tier1", order=1)
    ask = {"model": "tier1", "messages": [{"role": "user", "content": "x"}]}
    answer = http.post("/v1/llm/chat/completions", json=ask)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model"] == "steady-mock"
    call = recorded(http, "tier1")
    assert call["tier"] == "tier1" and call["deployment"] == "steady-mock" and call["outcome"] == "ok"
    assert [(a["deployment"], a["outcome"]) for a in call["attempts"]] == [
        ("flaky-mock", "server-error"),
        ("steady-mock", "ok"),
    ]


# --- the openai provider against the loopback upstream --------------------------------------------


def test_an_openai_compatible_upstream_answers_through_the_openai_package(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-plain", tier="tier2"))
    reply = llm.chat.completions.create(
        model="tier2", messages=[{"role": "user", "content": "hello"}], temperature=0.2, max_tokens=50
    )
    assert reply.choices[0].message.content == "echo: hello" and reply.model == "up-plain"
    usage = reply.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    sent = upstream.seen("up-plain")["last"]
    assert sent["model"] == "remote-up-plain" and sent["temperature"] == 0.2 and sent["max_tokens"] == 50


def test_a_stream_arrives_chunk_by_chunk_with_its_usage(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-stream"))
    chunks = list(
        llm.chat.completions.create(
            model="up-stream",
            messages=[{"role": "user", "content": "tell me a story"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: tell me a story"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert {c.model for c in chunks} == {"up-stream"}
    call = recorded(http, "up-stream")
    assert call["stream"] is True and call["outcome"] == "ok" and call["ttft_ms"] is not None
    assert call["response"]["choices"][0]["message"]["content"] == "echo: tell me a story"


def test_tool_calls_and_embeddings_come_back_in_openai_shape(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-tools"))
    tools: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    reply = llm.chat.completions.create(
        model="up-tools", messages=[{"role": "user", "content": "please call a tool"}], tools=tools
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "lookup" and reply.choices[0].finish_reason == "tool_calls"
    assert upstream.seen("up-tools")["last"]["tools"] == tools  # with their type: llama.cpp refuses one without
    apply(http, **upstream_model(upstream, "up-embed", mode="embedding"))
    vectors = llm.embeddings.create(model="up-embed", input=["one", "two"], dimensions=4)
    assert [len(item.embedding) for item in vectors.data] == [4, 4] and vectors.model == "up-embed"
    assert vectors.usage.prompt_tokens > 0


# --- records and bad input ------------------------------------------------------------------------


def test_a_tenant_that_records_metadata_keeps_no_prompt_or_answer_text(
    stack: Stack, llm: openai.OpenAI, http: httpx.Client
) -> None:
    apply(http, name="quiet", provider="mock")
    assert http.put("/v1/llm/settings", json={"record": "metadata"}).json() == {"record": "metadata"}
    try:
        llm.chat.completions.create(model="quiet", messages=[{"role": "user", "content": "my private words"}])
        call = recorded(http, "quiet")
        assert call["record"] == "metadata"
        assert "private" not in str(call["prompt"]) and "private" not in str(call["response"])
        assert call["prompt"]["messages"] == [{"role": "user", "chars": 16}]
        assert call["response"]["finish_reason"] == "stop"
    finally:
        http.put("/v1/llm/settings", json={"record": "full"})


def test_bad_requests_are_problems_naming_their_field(http: httpx.Client, llm: openai.OpenAI) -> None:
    apply(http, name="strict", provider="mock")
    post = http.post
    expect_problem(post("/v1/llm/chat/completions", json={"model": "strict"}), 422, "validation-error", "messages")
    bad_role = {"model": "strict", "messages": [{"role": "wizard", "content": "x"}]}
    expect_problem(post("/v1/llm/chat/completions", json=bad_role), 422, "validation-error", "messages[0].role")
    unknown = {"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}
    expect_problem(post("/v1/llm/chat/completions", json=unknown), 404, "model-not-found", "model")
    empty_tier = {"model": "tier4", "messages": [{"role": "user", "content": "x"}]}
    expect_problem(post("/v1/llm/chat/completions", json=empty_tier), 404, "model-not-found", "model")
    with pytest.raises(openai.NotFoundError):
        llm.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])


def test_calls_need_a_key(stack: Stack) -> None:
    answer = httpx.post(f"{stack.api_url}/v1/llm/chat/completions", json={"model": "tier1", "messages": []})
    expect_problem(answer, 401, "unauthorized")


# --- zero-credential mode and the command line ------------------------------------------------------


def test_with_no_llm_every_tier_answers_from_the_builtin_mock(stack: Stack, tenant: tuple[str, str]) -> None:
    with stack.extra_control_plane(AF_NO_LLM="1") as url, as_key(stack, tenant[1], url) as client:
        for model in ("tier1", "tier4", "gpt-4o"):
            answer = client.post(
                "/v1/llm/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == "mock"
            assert answer.json()["choices"][0]["message"]["content"] == "mock: hi"


def test_af_model_apply_and_af_models_ls_show_each_deployment_with_its_health(
    stack: Stack, tenant: tuple[str, str], tmp_path: Path
) -> None:
    runner = CliRunner(env={"COLUMNS": "250"})

    def factory(url: str | None, token: str | None) -> Client:
        return Client(api_url=stack.api_url, token=tenant[1])

    document = tmp_path / "shown.yaml"
    document.write_text("name: shown\nprovider: mock\ntier: tier2\norder: 3\n")
    applied = runner.invoke(cli, ["model", "apply", str(document)], obj=factory)
    assert applied.exit_code == 0 and applied.output.strip() in ("model shown created", "model shown unchanged")
    document.write_text("name: shown\nprovider: mock\ntier: tier5\n")
    refused = runner.invoke(cli, ["model", "apply", str(document)], obj=factory)
    assert refused.exit_code == 1 and "tier" in refused.output and len(refused.output.strip().splitlines()) == 1
    table = runner.invoke(cli, ["models", "ls"], obj=factory)
    assert table.exit_code == 0, table.output
    (line,) = [row for row in table.output.splitlines() if row.startswith("shown ")]
    assert "mock" in line and "tier2" in line and "healthy" in line
    as_json = runner.invoke(cli, ["models", "ls", "--output", "json"], obj=factory)
    assert "shown" in [item["name"] for item in json.loads(as_json.output)["items"]]


# --- the contract agents call ---------------------------------------------------------------------


async def test_a_redelivered_model_turn_is_answered_from_its_record_without_calling_the_model(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-turns"))
    body = {"model": "up-turns", "messages": [{"role": "user", "content": "plan the trip"}]}
    run_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    turn = CallContext(tenant=tenant[0], run_id=run_id, task_id=task_id, attempt=1, turn=0, caller="agent:planner@1")
    assert turn.idempotency_key == f"{run_id}:{task_id}:1:0"
    first = await gateway.chat(body, context=turn)
    assert first["choices"][0]["message"]["content"] == "echo: plan the trip" and first["model"] == "up-turns"
    asked = (await asyncio.to_thread(upstream.seen, "up-turns"))["requests"]
    assert await gateway.chat(body, context=turn) == first
    assert (await asyncio.to_thread(upstream.seen, "up-turns"))["requests"] == asked
    next_turn = CallContext(tenant=tenant[0], run_id=run_id, task_id=task_id, attempt=1, turn=1)
    await gateway.chat(body, context=next_turn)
    assert (await asyncio.to_thread(upstream.seen, "up-turns"))["requests"] == asked + 1
    with pytest.raises(NotFound) as unknown:
        await gateway.chat({**body, "model": "tier4"}, context=CallContext(tenant=tenant[0]))
    assert unknown.value.kind == "model-not-found"


async def test_a_turn_asked_again_while_its_call_is_in_flight_waits_for_that_call(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-slow-turns"))
    await asyncio.to_thread(upstream.fail, "up-slow-turns", latency_ms=800)
    body = {"model": "up-slow-turns", "messages": [{"role": "user", "content": "think"}]}
    turn = CallContext(tenant=tenant[0], run_id=str(uuid.uuid4()), task_id=str(uuid.uuid4()), attempt=1, turn=1)
    first, again = await asyncio.gather(gateway.chat(body, context=turn), gateway.chat(body, context=turn))
    assert first == again
    assert (await asyncio.to_thread(upstream.seen, "up-slow-turns"))["requests"] == 1


async def test_a_turn_asked_of_two_control_planes_at_once_calls_the_model_once(
    gateway: Gateway, stack: Stack, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-raced-turns"))
    await asyncio.to_thread(upstream.fail, "up-raced-turns", latency_ms=800)
    body = {"model": "up-raced-turns", "messages": [{"role": "user", "content": "race"}]}
    turn = CallContext(tenant=tenant[0], run_id=str(uuid.uuid4()), task_id=str(uuid.uuid4()), attempt=1, turn=1)
    # Another control plane's gateway: it shares no call in flight with this one, only PostgreSQL.
    async with running_gateway(stack) as other:
        first, again = await asyncio.gather(gateway.chat(body, context=turn), other.chat(body, context=turn))
    assert first == again
    assert (await asyncio.to_thread(upstream.seen, "up-raced-turns"))["requests"] == 1


async def test_a_turn_asked_for_the_first_time_is_called_once_and_then_answered_from_its_record(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-first-turns"))
    body = {"model": "up-first-turns", "messages": [{"role": "user", "content": "first"}]}
    ids = {"tenant": tenant[0], "run_id": str(uuid.uuid4()), "task_id": str(uuid.uuid4()), "attempt": 1, "turn": 1}
    # Its call starts while its lease is taken; the redelivery that follows asks it as not new.
    answered = await gateway.chat(body, context=CallContext(**ids, first=True))  # type: ignore[arg-type]
    assert answered["choices"][0]["message"]["content"] == "echo: first"
    again = await gateway.chat(body, context=CallContext(**ids))  # type: ignore[arg-type]
    assert again == answered
    assert (await asyncio.to_thread(upstream.seen, "up-first-turns"))["requests"] == 1


async def test_a_turn_asked_as_new_whose_lease_another_control_plane_holds_gets_that_holders_answer(
    gateway: Gateway, stack: Stack, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-doubled-turns"))
    await asyncio.to_thread(upstream.fail, "up-doubled-turns", latency_ms=800)
    body = {"model": "up-doubled-turns", "messages": [{"role": "user", "content": "doubled"}]}
    ids = {"tenant": tenant[0], "run_id": str(uuid.uuid4()), "task_id": str(uuid.uuid4()), "attempt": 1, "turn": 1}
    async with running_gateway(stack) as other:
        holding = asyncio.ensure_future(other.chat(body, context=CallContext(**ids)))  # type: ignore[arg-type]

        async def leased() -> bool:
            return bool((await asyncio.to_thread(upstream.seen, "up-doubled-turns"))["requests"])

        await eventually("the other control plane calling the model", leased)
        # A task message published twice: the second delivery looks new, but the lease is the holder's.
        doubled = await gateway.chat(body, context=CallContext(**ids, first=True))  # type: ignore[arg-type]
        assert doubled == await holding

    async def recorded() -> list[str]:
        answer = await asyncio.to_thread(http.get, "/v1/llm/calls", params={"run_id": ids["run_id"]})
        return [call["outcome"] for call in answer.json()["items"]]

    # One answered call: the early one, stopped once the lease was found to be another's, answered nothing.
    outcomes = await eventually("the holder's call recorded", recorded)
    assert outcomes.count("ok") == 1 and set(outcomes) <= {"ok", "cancelled"}, outcomes


async def test_a_turn_whose_lease_a_dead_control_plane_holds_is_called_once_the_lease_runs_out(
    gateway: Gateway, stack: Stack, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-orphan-turns"))
    body = {"model": "up-orphan-turns", "messages": [{"role": "user", "content": "orphan"}]}
    turn = CallContext(tenant=tenant[0], run_id=str(uuid.uuid4()), task_id=str(uuid.uuid4()), attempt=1, turn=1)
    assert turn.idempotency_key is not None
    pool = await connect_db(stack.database_url)
    try:  # a control plane that took the turn's lease for a second and died without a word
        held, _ = await llm_calls.take_lease(pool, tenant[0], turn.idempotency_key, "dead", 1.0)
    finally:
        await pool.close()
    assert held
    # The two-control-plane race above shows that a held lease is waited for; here it ends unreleased.
    answered = await gateway.chat(body, context=turn)
    assert answered["choices"][0]["message"]["content"] == "echo: orphan"
    assert (await asyncio.to_thread(upstream.seen, "up-orphan-turns"))["requests"] == 1


async def test_cancelling_a_runs_tasks_stops_their_calls_in_flight_and_records_why(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    apply(http, **upstream_model(upstream, "up-stopped"))
    await asyncio.to_thread(upstream.fail, "up-stopped", latency_ms=30_000)
    body = {"model": "up-stopped", "messages": [{"role": "user", "content": "ponder"}]}
    turn = CallContext(tenant=tenant[0], run_id=str(uuid.uuid4()), task_id=str(uuid.uuid4()), attempt=1, turn=1)
    asked = asyncio.ensure_future(gateway.chat(body, context=turn))

    async def stopped() -> int:
        return gateway.cancel_calls(tenant[0], turn.run_id or "", {turn.task_id or ""})

    await eventually("the call under way, stopped", stopped)
    with pytest.raises(asyncio.CancelledError):
        await asked
    await asyncio.to_thread(upstream.fail, "up-stopped")

    async def recorded() -> list[dict[str, Any]]:
        answer = await asyncio.to_thread(http.get, "/v1/llm/calls", params={"run_id": turn.run_id})
        items: list[dict[str, Any]] = answer.json()["items"]
        return items

    records = await eventually("the stopped call's record", recorded)
    assert [(c["outcome"], c["error"]) for c in records] == [("cancelled", "the run was cancelled")]
