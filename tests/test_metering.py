"""Metering of model calls against the real stack: one usage row per model turn however often it is
delivered, cost from the deployment's prices, usage summed by day, model, tier, run, workflow and agent,
budgets refusing calls with ``budget-exceeded``, the gateway's Prometheus series and GenAI spans, and no
tenant reading another's usage or calls."""

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from agentflow import Client
from agentflow.cli import cli
from click.testing import CliRunner

from control_plane.errors import BudgetExceeded
from control_plane.gateway import CallContext, Gateway
from registry import connect as connect_db
from registry import llm_calls, usage
from registry.llm_calls import LlmCall
from registry.usage import UsageRecord
from tests.conftest import Collector, Stack, running_gateway
from tests.test_observability import scrape, total, wait_for

PROBLEM = "urn:agentflow:problem:"
PRICED = {"input": 3.0, "output": 15.0}
"""US dollars per million tokens."""


def _as(key: str, url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def new_tenant(stack: Stack, prefix: str) -> tuple[str, str]:
    """A tenant of the test's own and its tenant-admin key."""
    name = f"{prefix}-{secrets.token_hex(3)}"
    return name, asyncio.run(stack.tenant_key(name))


@pytest.fixture
def tenant(stack: Stack) -> tuple[str, str]:
    return new_tenant(stack, "meter")


@pytest.fixture
def http(stack: Stack, tenant: tuple[str, str]) -> Iterator[httpx.Client]:
    with _as(tenant[1], stack.api_url) as client:
        yield client


def apply(http: httpx.Client, **document: Any) -> None:
    answer = http.post("/v1/models", json=document)
    assert answer.status_code in (200, 201), answer.text


def ask(http: httpx.Client, model: str, text: str = "hello") -> httpx.Response:
    return http.post("/v1/llm/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]})


def cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * PRICED["input"] + output_tokens * PRICED["output"]) / 1_000_000


def metered(http: httpx.Client, group_by: str, calls: int, **params: str) -> dict[str, Any]:
    """``/v1/usage`` once ``calls`` calls are metered (their rows follow the answers by a moment)."""

    def read() -> dict[str, Any] | None:
        answer = http.get("/v1/usage", params={"group_by": group_by, **params})
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body if body["total"]["calls"] >= calls else None

    found: dict[str, Any] = wait_for(f"{calls} metered calls", read, timeout=10)
    return found


def calls_by(http: httpx.Client, group_by: str, **params: str) -> dict[str, int]:
    answer = http.get("/v1/usage", params={"group_by": group_by, **params})
    assert answer.status_code == 200, answer.text
    return {k: v["calls"] for k, v in by_key(answer.json()).items()}


def start_workflow_run(http: httpx.Client, name: str) -> str:
    """A run of a one-step workflow of that name (it need not run: its row is what usage is summed by)."""
    workflow = {"name": name, "version": "1.0.0", "kind": "dag", "steps": [{"name": "s", "tool": "noop"}]}
    assert http.post("/v1/workflows", json=workflow).status_code in (200, 201)
    started = http.post("/v1/runs", json={"workflow": name, "input": {}})
    assert started.status_code == 201, started.text
    return str(started.json()["id"])


def by_key(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["key"]: item for item in answer["items"]}


def problem(answer: httpx.Response, status: int, slug: str, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["type"] == PROBLEM + slug, body
    if field is not None:
        assert body["field"] == field, body
    return body


def put_budget(http: httpx.Client, **limits: float) -> None:
    answer = http.put("/v1/budgets", json=limits)
    assert answer.status_code == 200, answer.text


def calls_of(http: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = http.get("/v1/llm/calls", params={"run_id": run_id}).json()["items"]
    return items


def cli_as(stack: Stack, key: str) -> tuple[CliRunner, Any]:
    def factory(url: str | None, token: str | None) -> Client:
        return Client(api_url=stack.api_url, token=key)

    return CliRunner(env={"COLUMNS": "250"}), factory


# --- metering ------------------------------------------------------------------------------------------


async def test_a_turn_delivered_twice_at_once_is_metered_once(
    gateway: Gateway, stack: Stack, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    apply(http, name="metered-mock", provider="mock", prices=PRICED)
    turn = CallContext(tenant=tenant[0], run_id=str(uuid.uuid4()), task_id="t", attempt=1, turn=0, caller="agent:a@1")
    body = {"model": "metered-mock", "messages": [{"role": "user", "content": "plan"}]}
    # Two control planes (one gateway shares a call in flight with the same key): the one that takes the
    # turn's lease calls the model, the other waits for its recorded answer.
    async with running_gateway(stack) as other:
        first, second = await asyncio.gather(gateway.chat(body, context=turn), other.chat(body, context=turn))
    again = await gateway.chat(body, context=turn)
    assert first == second == again, "one delivery called the model, the other got its answer"
    answer = await asyncio.to_thread(metered, http, "run", 1)
    (item,) = answer["items"]
    assert item["key"] == turn.run_id and item["calls"] == 1
    assert item["input_tokens"] == first["usage"]["prompt_tokens"]
    assert item["output_tokens"] == first["usage"]["completion_tokens"]


def delivered(tenant: str, key: str, tokens: int) -> tuple[LlmCall, UsageRecord]:
    """The record of one delivery of model turn ``key`` (``run:task:attempt:turn``) and its usage."""
    run_id, task_id, attempt, turn = key.split(":")
    call = LlmCall(
        id=str(uuid.uuid4()), tenant=tenant, run_id=run_id, task_id=task_id, attempt=int(attempt), turn=int(turn),
        caller="agent:a@1", idempotency_key=key, requested="tier1", tier="tier1", deployment="d", outcome="ok",
        error=None, attempts="[]", stream=False, latency_ms=1.0, ttft_ms=None, input_tokens=tokens, output_tokens=5,
        tokens_estimated=False, cost_usd=cost(tokens, 5), record="full", prompt=None, response=None,
    )  # fmt: skip
    metered = UsageRecord(
        tenant=tenant, usage_key=key, call_id=call.id, run_id=run_id, task_id=task_id, caller=call.caller,
        requested="tier1", tier="tier1", deployment="d", input_tokens=tokens, output_tokens=5, cost_usd=call.cost_usd,
    )  # fmt: skip
    return call, metered


async def test_a_usage_key_written_again_in_any_batch_is_metered_once(stack: Stack, tenant: tuple[str, str]) -> None:
    key = f"{uuid.uuid4()}:task-1:1:0"
    first, again, once_more = (delivered(tenant[0], key, tokens) for tokens in (10, 99, 77))
    pool = await connect_db(stack.database_url)
    try:
        await llm_calls.insert(pool, [first[0]], [first[1]])
        await llm_calls.insert(pool, [again[0], once_more[0]], [again[1], once_more[1]])
        spent = await usage.spent(pool, tenant[0], run_id=key.split(":")[0])
        recorded = await llm_calls.recent(pool, tenant[0], run_id=key.split(":")[0])
    finally:
        await pool.close()
    assert (spent.tokens, spent.cost_usd) == (15, pytest.approx(cost(10, 5))), "the first delivery's usage, once"
    assert len(recorded) == 3, "every delivery is still a recorded call"


def test_a_call_costs_its_tokens_at_the_deployment_prices(http: httpx.Client) -> None:
    apply(http, name="priced", provider="mock", prices=PRICED)
    apply(http, name="free", provider="mock")
    answer = ask(http, "priced", "what does this cost")
    assert answer.status_code == 200, answer.text
    tokens = answer.json()["usage"]
    assert ask(http, "free").status_code == 200
    expected = cost(tokens["prompt_tokens"], tokens["completion_tokens"])
    models = by_key(metered(http, "model", 2))
    assert models["priced"]["cost_usd"] == pytest.approx(expected) and expected > 0
    assert models["free"]["cost_usd"] == 0
    (call,) = [c for c in http.get("/v1/llm/calls").json()["items"] if c["deployment"] == "priced"]
    assert call["cost_usd"] == pytest.approx(expected)


# --- usage, summed --------------------------------------------------------------------------------------


async def test_usage_is_summed_by_day_model_tier_run_workflow_and_agent(
    stack: Stack, gateway: Gateway, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    apply(http, name="light", provider="mock", tier="tier1", prices=PRICED)
    apply(http, name="heavy", provider="mock", tier="tier3", prices={"input": 30.0, "output": 60.0})
    flow_run, lone_run = await asyncio.to_thread(start_workflow_run, http, "metered-flow"), str(uuid.uuid4())
    body = {"messages": [{"role": "user", "content": "summarise the report"}]}
    turns = [
        ("tier1", CallContext(tenant=tenant[0], run_id=flow_run, task_id="a", turn=0, caller="agent:writer@1")),
        ("tier1", CallContext(tenant=tenant[0], run_id=flow_run, task_id="a", turn=1, caller="agent:writer@1")),
        ("tier3", CallContext(tenant=tenant[0], run_id=lone_run, task_id="b", turn=0, caller="agent:judge@1")),
    ]
    answers = [await gateway.chat({**body, "model": model}, context=context) for model, context in turns]
    one = answers[0]["usage"]
    light, heavy = 2 * cost(one["prompt_tokens"], one["completion_tokens"]), answers[2]["usage"]

    models = await asyncio.to_thread(metered, http, "model", 3)
    assert {k: v["calls"] for k, v in by_key(models).items()} == {"light": 2, "heavy": 1}
    assert by_key(models)["light"]["cost_usd"] == pytest.approx(light)
    assert [item["key"] for item in models["items"]] == ["heavy", "light"], "the most costly first"
    assert models["total"]["input_tokens"] == sum(a["usage"]["prompt_tokens"] for a in answers)
    assert heavy["prompt_tokens"] > 0

    today = datetime.now(UTC).date()
    assert calls_by(http, "day") == {today.isoformat(): 3}
    assert calls_by(http, "tier") == {"tier1": 2, "tier3": 1}
    assert calls_by(http, "run") == {flow_run: 2, lone_run: 1}
    assert calls_by(http, "workflow") == {"metered-flow": 2, "-": 1}
    assert calls_by(http, "agent") == {"agent:writer@1": 2, "agent:judge@1": 1}
    assert calls_by(http, "model", since=today.isoformat()) == {"light": 2, "heavy": 1}
    assert calls_by(http, "model", until=today.isoformat()) == {}
    assert calls_by(http, "model", since=(datetime.now(UTC) + timedelta(minutes=5)).isoformat()) == {}


def test_a_usage_query_is_checked_at_its_fields(http: httpx.Client) -> None:
    problem(http.get("/v1/usage", params={"group_by": "colour"}), 422, "validation-error", "group_by")
    problem(http.get("/v1/usage", params={"since": "last tuesday"}), 422, "validation-error", "since")
    later = {"since": "2026-12-02", "until": "2026-12-01"}
    problem(http.get("/v1/usage", params=later), 422, "validation-error", "until")


def test_af_usage_prints_the_sums_and_their_total(stack: Stack, http: httpx.Client, tenant: tuple[str, str]) -> None:
    apply(http, name="tabled", provider="mock", prices=PRICED)
    assert ask(http, "tabled").status_code == 200
    metered(http, "model", 1)
    runner, factory = cli_as(stack, tenant[1])
    table = runner.invoke(cli, ["usage", "--by", "model"], obj=factory)
    assert table.exit_code == 0, table.output
    (line,) = [row for row in table.output.splitlines() if row.startswith("tabled ")]
    assert " 1 " in line and "$0.0" in line
    assert any(row.startswith("TOTAL ") for row in table.output.splitlines())
    as_json = json.loads(runner.invoke(cli, ["usage", "--output", "json"], obj=factory).output)
    assert as_json["group_by"] == "model" and as_json["total"]["calls"] == 1
    refused = runner.invoke(cli, ["usage", "--since", "someday"], obj=factory)
    assert refused.exit_code != 0 and len(refused.output.strip().splitlines()) == 1 and "since" in refused.output


# --- budgets --------------------------------------------------------------------------------------------


def test_a_call_over_the_monthly_budget_is_refused_and_counted(
    stack: Stack, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    apply(http, name="budgeted", provider="mock", prices=PRICED)
    assert http.get("/v1/budgets").json()["monthly_tokens"] is None
    runner, factory = cli_as(stack, tenant[1])
    set_budget = runner.invoke(cli, ["budget", "set", "--monthly-tokens", "5", "--run-cost", "2.5"], obj=factory)
    assert set_budget.exit_code == 0, set_budget.output
    assert "0 of 5" in set_budget.output
    assert ask(http, "budgeted", "one long enough question").status_code == 200, "spent 0 of 5 before it"
    over = ask(http, "budgeted")
    refused = problem(over, 402, "budget-exceeded", "monthly_tokens")
    assert "monthly_tokens" in refused["detail"] and "of 5" in refused["detail"]
    assert 0 < int(over.headers["Retry-After"]) <= 31 * 24 * 3600, "until the month turns"
    shown = json.loads(runner.invoke(cli, ["budget", "show", "--output", "json"], obj=factory).output)
    assert shown["monthly_tokens"] == 5 and shown["run_cost_usd"] == 2.5 and shown["month"]["tokens"] > 5

    samples = scrape(f"{stack.api_url}/metrics")
    assert total(samples, "agentflow_llm_budget_refusals_total", tenant=tenant[0], budget="monthly_tokens") == 1
    assert total(samples, "agentflow_llm_calls_total", tenant=tenant[0], outcome="budget-exceeded") == 1

    problem(http.put("/v1/budgets", json={"monthly_tokens": -1}), 422, "validation-error", "monthly_tokens")
    problem(http.put("/v1/budgets", json={"weekly_tokens": 1}), 422, "validation-error", "weekly_tokens")
    assert runner.invoke(cli, ["budget", "set"], obj=factory).exit_code == 0, "no option lifts every limit"
    assert ask(http, "budgeted").status_code == 200


async def test_a_run_over_its_budget_is_refused_to_gateway_callers(
    gateway: Gateway, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    apply(http, name="run-budgeted", provider="mock", prices=PRICED)
    await asyncio.to_thread(put_budget, http, run_tokens=1)
    run_id = str(uuid.uuid4())
    body = {"model": "run-budgeted", "messages": [{"role": "user", "content": "go"}]}
    await gateway.chat(body, context=CallContext(tenant=tenant[0], run_id=run_id, task_id="t", turn=0))
    with pytest.raises(BudgetExceeded) as refused:
        await gateway.chat(body, context=CallContext(tenant=tenant[0], run_id=run_id, task_id="t", turn=1))
    assert refused.value.kind == "budget-exceeded" and refused.value.field == "run_tokens"
    other_run = CallContext(tenant=tenant[0], run_id=str(uuid.uuid4()), task_id="t", turn=0)
    assert (await gateway.chat(body, context=other_run))["choices"], "another run has its own budget"


def test_only_a_tenant_admin_sets_budgets_and_a_viewer_reads_no_usage(
    stack: Stack, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    def key_of(role: str) -> str:
        made = http.post(f"/v1/tenants/{tenant[0]}/keys", json={"role": role})
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    with _as(key_of("developer"), stack.api_url) as developer, _as(key_of("viewer"), stack.api_url) as viewer:
        assert developer.get("/v1/usage").status_code == 200
        problem(developer.put("/v1/budgets", json={"monthly_tokens": 1}), 403, "forbidden")
        problem(viewer.get("/v1/usage"), 403, "forbidden")


# --- one tenant's usage is its own ------------------------------------------------------------------------


async def test_one_tenant_cannot_read_another_tenants_usage_or_calls(
    stack: Stack, gateway: Gateway, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    other, other_key = await asyncio.to_thread(new_tenant, stack, "meter-other")
    with _as(other_key, stack.api_url) as theirs:
        apply(theirs, name="their-model", provider="mock", prices=PRICED)
        run_id = str(uuid.uuid4())
        body = {"model": "their-model", "messages": [{"role": "user", "content": "private"}]}
        await gateway.chat(body, context=CallContext(tenant=other, run_id=run_id, task_id="t", turn=0))
        await asyncio.to_thread(metered, theirs, "run", 1)
    apply(http, name="my-model", provider="mock")
    assert ask(http, "my-model").status_code == 200
    mine = await asyncio.to_thread(metered, http, "run", 1)
    assert run_id not in by_key(mine) and mine["total"]["calls"] == 1
    assert await asyncio.to_thread(calls_of, http, run_id) == []

    runner, factory = cli_as(stack, tenant[1])
    mine_listed = runner.invoke(cli, ["llm", "calls", run_id], obj=factory)
    assert mine_listed.exit_code == 0 and "their-model" not in mine_listed.output
    runner, factory = cli_as(stack, other_key)
    listed = runner.invoke(cli, ["llm", "calls", run_id], obj=factory)
    assert listed.exit_code == 0, listed.output
    (line,) = [row for row in listed.output.splitlines() if "their-model" in row]
    assert "their-model:ok" in line and line.rstrip().endswith("ok") and "$0.0" in line
    as_json = json.loads(runner.invoke(cli, ["llm", "calls", run_id, "--output", "json"], obj=factory).output)
    (call,) = as_json["items"]
    assert call["deployment"] == "their-model" and call["cost_usd"] > 0 and call["attempts"][0]["outcome"] == "ok"


# --- metrics and spans ----------------------------------------------------------------------------------


def test_every_call_is_counted_timed_and_its_tokens_and_cost_summed_by_tenant_model_and_outcome(
    stack: Stack, http: httpx.Client, tenant: tuple[str, str]
) -> None:
    apply(http, name="counted", provider="mock", prices=PRICED)
    apply(http, name="broken", provider="mock", options={"fail": "500"})
    answer = ask(http, "counted").json()["usage"]
    assert ask(http, "broken").status_code == 503
    streamed = http.post(
        "/v1/llm/chat/completions",
        json={"model": "counted", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert streamed.status_code == 200
    mine = {"tenant": tenant[0], "model": "counted"}
    samples = scrape(f"{stack.api_url}/metrics")
    assert total(samples, "agentflow_llm_calls_total", outcome="ok", **mine) == 2
    assert total(samples, "agentflow_llm_calls_total", tenant=tenant[0], model="broken") == 1
    assert total(samples, "agentflow_llm_attempts_total", tenant=tenant[0], model="broken", outcome="server-error") == 1
    assert total(samples, "agentflow_llm_call_duration_seconds_count", outcome="ok", **mine) == 2
    assert total(samples, "agentflow_llm_time_to_first_token_seconds_count", **mine) == 1
    assert total(samples, "agentflow_llm_tokens_total", direction="input", **mine) >= answer["prompt_tokens"]
    assert total(samples, "agentflow_llm_cost_usd_total", **mine) > cost(answer["prompt_tokens"], 0)
    labels = {
        name: {key for found, _ in samples[name] for key in found if key != "le"}
        for name in ("agentflow_llm_calls_total", "agentflow_llm_call_duration_seconds_bucket")
    }
    assert labels == {name: {"tenant", "model", "outcome"} for name in labels}, "never a run id"


def test_a_model_call_is_a_genai_span_in_the_callers_trace(
    stack: Stack, collector: Collector, tenant: tuple[str, str]
) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    with (
        stack.extra_control_plane(AF_OTLP_ENDPOINT=collector.endpoint, OTEL_BSP_SCHEDULE_DELAY="100") as url,
        _as(tenant[1], url) as traced,
    ):
        apply(traced, name="spanned", provider="mock", tier="tier2", model="mock-large", prices=PRICED)
        answer = traced.post(
            "/v1/llm/chat/completions",
            json={"model": "tier2", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5},
            headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        )
        assert answer.status_code == 200, answer.text
        tokens = answer.json()["usage"]

        def spans() -> list[Any]:
            return [s for s in collector.spans if s.trace_id == trace_id]

        found = wait_for("the call's spans", lambda: len(spans()) >= 2 and spans(), timeout=20)
    server = next(s for s in found if s.name == "POST /v1/llm/chat/completions")
    (call,) = [s for s in found if s.name == "chat tier2"]
    assert server.parent_id == parent and call.parent_id == server.span_id
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.system"] == "mock"
    assert call.attributes["gen_ai.request.model"] == "tier2"
    assert call.attributes["gen_ai.response.model"] == "mock-large"
    assert call.attributes["gen_ai.request.temperature"] == 0.5
    assert call.attributes["gen_ai.usage.input_tokens"] == tokens["prompt_tokens"]
    assert call.attributes["gen_ai.usage.output_tokens"] == tokens["completion_tokens"]
    assert call.attributes["agentflow.llm.deployment"] == "spanned"
