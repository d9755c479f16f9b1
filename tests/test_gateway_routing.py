"""Routing down a tier's chain against real upstreams that fail on demand: failover on each retryable failure,
Retry-After honoured, cool-down entered, shown and left, a context-length error sent to a larger window, a
chain with nothing healthy refused at once with every error, garbage and a cut stream failing cleanly; and
``routing.plan`` ordering a rung by latency (moving average) and cost."""

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from agentflow import Client
from agentflow.cli import cli
from click.testing import CliRunner

from bus.messages import ModelHealth
from control_plane.errors import Refused
from control_plane.gateway import CallContext
from control_plane.gateway.deployments import Deployment
from control_plane.gateway.documents import ModelSpec, Prices
from control_plane.gateway.health import View, Window
from control_plane.gateway.routing import plan
from control_plane.gateway.settings import GatewaySettings
from control_plane.stack.processes import free_port
from tests.conftest import Stack, Upstream, apply, expect_problem, recorded, running_gateway, upstream_model


@contextlib.contextmanager
def deployed(http: httpx.Client, upstream: Upstream, *documents: dict[str, Any]) -> Iterator[None]:
    """The deployments applied for the test, their upstreams' faults cleared, and all removed after it."""
    for document in documents:
        apply(http, **document)
    try:
        yield
    finally:
        for document in documents:
            http.delete(f"/v1/models/{document['name']}")
            upstream.fail(document["name"])


def refused_port(name: str, **fields: Any) -> dict[str, Any]:
    """An openai deployment at a loopback port nobody listens on."""
    return {"name": name, "provider": "openai", "endpoint": f"http://127.0.0.1:{free_port()}/v1", **fields}


def ask(model: str, text: str = "hello") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def attempts(call: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["deployment"], a["outcome"]) for a in call["attempts"]]


def health(http: httpx.Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = http.get(f"/v1/models/{name}").json()["health"]
    return found


def wait_for(what: str, check: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds}s"
        time.sleep(0.1)


# --- failover -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [("429", "rate-limited"), ("500", "server-error"), ("hang", "timeout"), ("refused", "refused"),
     ("close", "refused"), ("garbage", "garbage")],
)  # fmt: skip
def test_a_failed_attempt_fails_over_to_the_next_deployment_of_the_tier(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream, fault: str, outcome: str
) -> None:
    first, second = f"over-{fault}-1", f"over-{fault}-2"
    primary = (
        refused_port(first, tier="tier1")
        if fault == "refused"
        else upstream_model(upstream, first, tier="tier1", timeout_seconds=0.5)
    )
    with deployed(http, upstream, primary, upstream_model(upstream, second, tier="tier1", order=1)):
        if fault != "refused":
            upstream.fail(first, {"kind": fault})
        reply = llm.chat.completions.create(model="tier1", messages=[{"role": "user", "content": f"after {fault}"}])
        assert reply.model == second and reply.choices[0].message.content == f"echo: after {fault}"
        call = recorded(http, "tier1", lambda call: call["attempts"][0]["deployment"] == first)
        assert call["deployment"] == second and attempts(call) == [(first, outcome), (second, "ok")]
        assert health(http, first)["consecutive_failures"] == 1


def test_a_stream_that_cannot_start_fails_over_and_one_cut_mid_way_ends_with_an_error(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    with deployed(
        http,
        upstream,
        upstream_model(upstream, "streams-1", tier="tier1"),
        upstream_model(upstream, "streams-2", tier="tier1", order=1),
    ):
        upstream.fail("streams-1", {"kind": "garbage"})
        chunks = list(
            llm.chat.completions.create(model="tier1", messages=[{"role": "user", "content": "a b"}], stream=True)
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b"
        assert {c.model for c in chunks} == {"streams-2"}
        upstream.fail("streams-1", {"kind": "cut"})
        with pytest.raises(openai.APIError) as cut:
            list(llm.chat.completions.create(model="tier1", messages=[{"role": "user", "content": "c d"}], stream=True))
        assert "streams-1" in cut.value.message
        call = recorded(http, "tier1", lambda call: call["outcome"] != "ok")
        assert call["outcome"] == "stream-interrupted" and call["deployment"] == "streams-1"
        assert call["response"]["choices"][0]["message"]["content"] == "echo:"  # what came before the cut


def test_an_error_chunk_mid_stream_ends_the_stream_with_it(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    with deployed(http, upstream, upstream_model(upstream, "overloaded")):
        upstream.fail("overloaded", {"kind": "overloaded"})
        with pytest.raises(openai.APIError) as failed:
            list(
                llm.chat.completions.create(
                    model="overloaded", messages=[{"role": "user", "content": "i j"}], stream=True
                )
            )
        assert failed.value.message == "overloaded: server-error: the stream failed: Overloaded"


def test_a_stream_that_stalls_mid_way_ends_with_an_error_within_the_attempt_timeout(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    with deployed(http, upstream, upstream_model(upstream, "stalling", timeout_seconds=0.5)):
        upstream.fail("stalling", {"kind": "stall"})
        with pytest.raises(openai.APIError) as stalled:
            list(
                llm.chat.completions.create(
                    model="stalling", messages=[{"role": "user", "content": "e f"}], stream=True
                )
            )
        # the transport's read timeout or the stream's own, whichever notices first: both are the attempt's
        assert stalled.value.message.startswith("stalling: timeout: ")
        assert recorded(http, "stalling")["outcome"] == "stream-interrupted"


def test_a_caller_that_leaves_mid_stream_still_has_its_call_recorded(http: httpx.Client, upstream: Upstream) -> None:
    with deployed(http, upstream, upstream_model(upstream, "deserted", timeout_seconds=20)):
        upstream.fail("deserted", {"kind": "stall"})
        body = {**ask("deserted", "g h"), "stream": True}
        with http.stream("POST", "/v1/llm/chat/completions", json=body) as answer:
            assert answer.status_code == 200
            next(line for line in answer.iter_lines() if '"content":"echo:"' in line)
        call = recorded(http, "deserted")  # long before the stall's timeout
        assert call["outcome"] == "cancelled" and call["error"] == "the caller left before the stream's end"
        assert call["response"]["choices"][0]["message"]["content"] == "echo:"


# --- cool-down ------------------------------------------------------------------------------------


def test_a_429_with_retry_after_cools_the_deployment_down_for_that_long_shown_by_af_models_ls(
    stack: Stack, tenant: tuple[str, str], http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    with deployed(
        http,
        upstream,
        upstream_model(upstream, "patient-1", tier="tier2"),
        upstream_model(upstream, "patient-2", tier="tier2", order=1),
    ):
        upstream.fail("patient-1", {"kind": "429", "retry_after": 3})
        assert (
            llm.chat.completions.create(model="tier2", messages=[{"role": "user", "content": "x"}]).model == "patient-2"
        )
        cooling = health(http, "patient-1")
        assert cooling["state"] == "cooling-down" and 0 < cooling["cooldown_seconds"] <= 3
        assert cooling["reason"].startswith("Retry-After 3s: rate-limited (HTTP 429)")

        def factory(url: str | None, token: str | None) -> Client:
            return Client(api_url=stack.api_url, token=tenant[1])

        table = CliRunner(env={"COLUMNS": "250"}).invoke(cli, ["models", "ls"], obj=factory)
        assert table.exit_code == 0, table.output
        (line,) = [row for row in table.output.splitlines() if row.startswith("patient-1 ")]
        assert "cooling-down" in line and "Retry-After 3s: rate-limited" in line
        left = float(line.split("cooling-down", 1)[1].split()[0].rstrip("s"))
        assert 0 < left <= 3

        asked = upstream.seen("patient-1")["requests"]
        assert (
            llm.chat.completions.create(model="tier2", messages=[{"role": "user", "content": "y"}]).model == "patient-2"
        )
        assert upstream.seen("patient-1")["requests"] == asked  # left alone while it cools down
        call = recorded(
            http, "tier2", lambda call: len(call["attempts"]) == 2 and call["attempts"][1]["outcome"] == "skipped"
        )
        skipped = [a for a in call["attempts"] if a["outcome"] == "skipped"]
        assert [a["deployment"] for a in skipped] == ["patient-1"] and "Retry-After 3s" in skipped[0]["error"]

        wait_for("the cool-down's end", lambda: health(http, "patient-1")["cooldown_seconds"] == 0)
        assert health(http, "patient-1")["state"] == "probing"
        assert (
            llm.chat.completions.create(model="tier2", messages=[{"role": "user", "content": "z"}]).model == "patient-1"
        )
        restored = health(http, "patient-1")
        assert restored["state"] == "healthy" and restored["reason"] is None and restored["consecutive_failures"] == 0


async def test_failures_in_a_row_cool_a_deployment_down_and_a_failed_probe_doubles_it(
    stack: Stack, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    with deployed(http, upstream, upstream_model(upstream, "wobbly")):
        async with running_gateway(
            stack, GatewaySettings(llm_cooldown_failures=2, llm_cooldown_base_seconds=1.0)
        ) as gateway:
            key = (await gateway.deployments.visible(tenant[0]))["wobbly"].key
            me = CallContext(tenant=tenant[0])

            async def refused() -> Refused:
                with pytest.raises(Refused) as failed:
                    await gateway.chat(ask("wobbly"), context=me)
                return failed.value

            await asyncio.to_thread(upstream.fail, "wobbly", {"kind": "500", "times": 3})
            assert (await refused()).kind == "no-healthy-deployment"
            assert gateway.board.view(key).state == "degraded"
            await refused()
            first: ModelHealth = gateway.board.view(key).health
            assert first.until - first.at == pytest.approx(1.0) and first.reason.startswith("2 in a row: server-error")
            fast = await refused()  # cooling down: not called at all
            assert "cooling down for" in fast.detail and fast.retry_after is not None and 0 < fast.retry_after <= 1.0
            assert (await asyncio.to_thread(upstream.seen, "wobbly"))["requests"] == 2

            await asyncio.sleep(max(0.0, first.until - time.time()))
            assert gateway.board.view(key).state == "probing"
            await refused()  # the probe fails: at once cooling down again, for twice as long
            second = gateway.board.view(key).health
            assert second.cooldowns == 2 and second.until - second.at == pytest.approx(2.0)

            await asyncio.sleep(max(0.0, second.until - time.time()))
            answer = await gateway.chat(ask("wobbly"), context=me)  # the probe answers: restored
            assert answer["model"] == "wobbly" and gateway.board.view(key).state == "healthy"
            assert gateway.board.view(key).health == ModelHealth(at=gateway.board.view(key).health.at)


# --- windows, and chains with nothing healthy ------------------------------------------------------


async def test_a_context_length_error_goes_to_a_deployment_with_a_larger_window(
    stack: Stack, http: httpx.Client, tenant: tuple[str, str], upstream: Upstream
) -> None:
    small = {
        "name": "window-small",
        "provider": "anthropic",
        "endpoint": upstream.url("window-small"),
        "credential": "anthropic-key",
        "context_window": 8192,
        "tier": "tier3",
    }
    same = upstream_model(upstream, "window-same", tier="tier3", order=1, context_window=8192)
    large = upstream_model(upstream, "window-large", tier="tier3", order=2, context_window=200_000)
    with deployed(http, upstream, small, same, large):
        async with running_gateway(stack, secrets={tenant[0]: {"anthropic-key": "sk-ant-test"}}) as gateway:
            await asyncio.to_thread(upstream.fail, "window-small", {"kind": "context-length"})
            answer = await gateway.chat(ask("tier3", "a long prompt"), context=CallContext(tenant=tenant[0]))
            assert answer["model"] == "window-large"
        assert upstream.seen("window-same")["requests"] == 0
        call = recorded(http, "tier3")
        assert attempts(call) == [
            ("window-small", "context-length"),
            ("window-large", "ok"),
            ("window-same", "skipped"),
        ]
        assert "prompt is too long" in call["attempts"][0]["error"]
        assert "no larger than one the prompt did not fit (8192)" in call["attempts"][2]["error"]

        upstream.fail("window-large", {"kind": "context-length"})
        too_long = await asyncio.to_thread(http.post, "/v1/llm/chat/completions", json=ask("window-large"))
        problem = expect_problem(too_long, 422, "context-length-exceeded", "messages")
        assert "maximum context length" in problem["detail"]


def test_a_tier_with_no_healthy_deployment_fails_at_once_naming_each_deployment_and_its_error(
    http: httpx.Client, upstream: Upstream
) -> None:
    with deployed(
        http,
        upstream,
        upstream_model(upstream, "down-1", tier="tier4"),
        refused_port("down-2", tier="tier4", order=1),
        upstream_model(upstream, "down-3", tier="tier4", order=2),
    ):
        upstream.fail("down-1", {"kind": "500", "times": 0})
        upstream.fail("down-3", {"kind": "429", "retry_after": 30})
        answer = http.post("/v1/llm/chat/completions", json=ask("tier4"))
        problem = expect_problem(answer, 503, "no-healthy-deployment", "model")
        detail = problem["detail"]
        assert detail.startswith("tier4: no deployment answered; ")
        assert "down-1: server-error (HTTP 500): upstream failed" in detail
        assert "down-2: refused: connection failed (ClientConnectorError" in detail
        assert "down-3: rate-limited (HTTP 429): rate limited" in detail
        assert 1 <= int(answer.headers["Retry-After"]) <= 30
        http.post("/v1/llm/chat/completions", json=ask("tier4"))  # two in a row: down-1 and down-2 cool down too
        asked = upstream.seen("down-1")["requests"]
        at_once = http.post("/v1/llm/chat/completions", json=ask("tier4"))
        problem = expect_problem(at_once, 503, "no-healthy-deployment", "model")
        assert upstream.seen("down-1")["requests"] == asked  # nothing was called
        assert problem["detail"].count("cooling down for") == 3 and "Retry-After" in at_once.headers


def test_a_provider_answering_garbage_is_a_clean_provider_error(http: httpx.Client, upstream: Upstream) -> None:
    with deployed(http, upstream, upstream_model(upstream, "babbler")):
        upstream.fail("babbler", {"kind": "garbage"})
        answer = http.post("/v1/llm/chat/completions", json=ask("babbler"))
        problem = expect_problem(answer, 502, "provider-error", "model")
        assert "babbler: garbage: the answer is not a chat completion" in problem["detail"]
        assert json.loads(answer.text)["status"] == 502


def test_a_rung_measures_each_deployment_then_sends_calls_to_the_faster(
    http: httpx.Client, llm: openai.OpenAI, upstream: Upstream
) -> None:
    with deployed(
        http,
        upstream,
        upstream_model(upstream, "rung-quick", tier="tier2"),
        upstream_model(upstream, "rung-sluggish", tier="tier2"),
    ):
        upstream.fail("rung-sluggish", latency_ms=400)
        answered = [
            llm.chat.completions.create(model="tier2", messages=[{"role": "user", "content": "q"}]).model
            for _ in range(6)
        ]
        # by name first; then the one never measured (it counts as the fastest); then the faster, always
        assert answered[:2] == ["rung-quick", "rung-sluggish"] and answered[2:] == ["rung-quick"] * 4
        assert health(http, "rung-sluggish")["latency_ewma_ms"] > health(http, "rung-quick")["latency_ewma_ms"]


# --- ordering a rung (pure) -----------------------------------------------------------------------


def _deployment(name: str, order: int = 0, price: float = 1.0, **fields: Any) -> Deployment:
    spec = ModelSpec(name=name, provider="mock", order=order, prices=Prices(input=price, output=price), **fields)
    return Deployment.of("t", spec)


def _view(ewma: float | None = None, *, cooling: float = 0.0, calls: int = 0, errors: int = 0) -> View:
    state = (
        ModelHealth(until=time.time() + cooling, reason="Retry-After 9s: rate-limited") if cooling else ModelHealth()
    )
    return View(state, cooling, calls, errors, 0, None, ewma)


def _order(views: dict[str, tuple[Deployment, View]], **weights: float) -> list[str]:
    settings = GatewaySettings(**{f"llm_weight_{k}": v for k, v in weights.items()})
    order, _ = plan([d for d, _ in views.values()], lambda d: views[d.name][1], settings)
    return [d.name for d in order]


def test_a_rung_prefers_the_faster_by_moving_average_and_the_cheaper_by_price() -> None:
    by_latency = {
        "slow": (_deployment("slow"), _view(900.0)),
        "fast": (_deployment("fast"), _view(100.0)),
        "new": (_deployment("new"), _view(None)),  # never measured: tried, so that it gets measured
    }
    assert _order(by_latency) == ["new", "fast", "slow"]
    by_price = {"dear": (_deployment("dear", price=10.0), _view(100.0)), "cheap": (_deployment("cheap"), _view(100.0))}
    assert _order(by_price) == ["cheap", "dear"]
    traded = {
        "dear-fast": (_deployment("dear-fast", price=3.0), _view(100.0)),
        "cheap-slow": (_deployment("cheap-slow"), _view(1000.0)),
    }
    assert _order(traded) == ["dear-fast", "cheap-slow"]  # latency 0.1 + cost 1 against 1 + 0.33
    assert _order(traded, latency=0.1) == ["cheap-slow", "dear-fast"]
    assert _order(traded, cost=0.0) == ["dear-fast", "cheap-slow"]
    failing = {
        "flaky": (_deployment("flaky"), _view(100.0, calls=10, errors=9)),
        "steady": (_deployment("steady"), _view(300.0, calls=10)),
    }
    assert _order(failing) == ["steady", "flaky"]


def test_rungs_go_in_order_and_what_cools_down_or_is_at_its_limit_is_left_out_with_why() -> None:
    views = {
        "backup": (_deployment("backup", order=1), _view(1.0)),
        "primary": (_deployment("primary", price=50.0), _view(5000.0)),
        "cooling": (_deployment("cooling"), _view(1.0, cooling=9.0)),
        "busy": (_deployment("busy", rpm=10), _view(1.0, calls=10)),
    }
    order, skipped = plan([d for d, _ in views.values()], lambda d: views[d.name][1], GatewaySettings())
    assert [d.name for d in order] == ["primary", "backup"]
    reasons = {s.deployment.name: s.reason for s in skipped}
    assert reasons["cooling"].startswith("cooling down for 9.0s more after Retry-After 9s")
    assert reasons["busy"] == "at its limit of 10 requests a minute"


def test_the_latency_a_rung_is_ordered_by_is_a_moving_average_of_successes() -> None:
    window = Window()
    window.add(1000.0, ok=True, latency_ms=100.0, tokens=0)
    window.add(1000.5, ok=True, latency_ms=200.0, tokens=0)
    window.add(1001.0, ok=False, latency_ms=5000.0, tokens=0)  # a failure's latency says nothing of speed
    assert window.stats(1001.0).latency_ewma_ms == pytest.approx(120.0)  # 100 + 0.2 * (200 - 100)
    assert window.stats(1001.0).calls == 3 and window.stats(1001.0).errors == 1
