"""``Gateway``: every model call, routed down its chain with failover, and recorded.

One call: the request is checked (``requests``); a call with an idempotency key already answered is
answered again from its record, calling no provider, and one whose key is in flight waits for that call's
answer (in this process, or in another control plane holding the key's lease: ``leases``); the caller's
``model`` becomes a chain (``deployments``); a tenant or run that has spent its budget is refused
(``budgets``, ``budget-exceeded``); the chain is ordered by health, latency and cost (``routing``); each
deployment is tried in turn within its attempt timeout and the call's deadline:

- a retryable failure (429, 5xx, timeout, connection, garbage, a wrong key) moves on down the chain and
  counts towards the deployment's cool-down (``health``);
- a context-length error moves on to the deployments with a larger window only (the others are left out,
  and recorded so);
- any other 400-class answer fails the call at once (``provider-error``): the next deployment would refuse
  the same content.

The chain exhausted, the call fails with ``no-healthy-deployment``, its detail naming every deployment
tried or left out and why, and ``Retry-After`` the soonest a cooling one may be tried again; or, when
waiting would not help, with what every deployment said: ``context-length-exceeded`` when no larger window
was left, ``provider-error`` when each answered garbage, ``secret-not-found`` when each lacked its key.
Every call, answered or not, is recorded with all its attempts and its cost, metered (``recorder``), counted
and its span ended (``telemetry``).
"""

import asyncio
import base64
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, TypeVar

import msgspec

from bus import Bus
from bus.model_health import HealthBucket
from control_plane.errors import Invalid, NotFound, Refused, Unavailable, UpstreamFailed
from control_plane.gateway import routing, telemetry, tokens
from control_plane.gateway.budgets import Budgets
from control_plane.gateway.credentials import Credentials, KeyCache
from control_plane.gateway.deployments import LOCAL, Chain, Deployment, Deployments
from control_plane.gateway.documents import PLATFORM, ModelSpec
from control_plane.gateway.failures import Failure
from control_plane.gateway.health import Board
from control_plane.gateway.leases import TurnLeases
from control_plane.gateway.providers.anthropic import AnthropicProvider
from control_plane.gateway.providers.base import Answer, Piece, Provider, Target, Usage
from control_plane.gateway.providers.local import LocalProvider
from control_plane.gateway.providers.mock import MockProvider
from control_plane.gateway.providers.openai import OpenAIProvider
from control_plane.gateway.providers.transport import Http
from control_plane.gateway.recorder import AttemptRecord, Recorder, Trace, answer_metadata, prompt_of
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest, parse_chat, parse_embedding
from control_plane.gateway.settings import GatewaySettings
from control_plane.gateway.streams import ChatStream
from registry.db import Pool
from registry.llm_calls import LlmCall
from registry.usage import UsageRecord

T = TypeVar("T")
CANCELLED_RUN = "the run was cancelled"


class CallContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who calls, and for which model turn of which run."""

    tenant: str
    run_id: str | None = None
    task_id: str | None = None
    attempt: int = 0
    turn: int | None = None
    caller: str = "api"
    """``agent:reviewer@1``, ``api:key:<prefix>``…"""
    first: bool = False
    """The turn was never asked before (``TurnRequest.first``): its call may start while its lease is taken."""

    @property
    def idempotency_key(self) -> str | None:
        if self.run_id is None:
            return None
        return f"{self.run_id}:{self.task_id}:{self.attempt}:{self.turn}"


async def _usage_of(answer: Answer, request: ChatRequest, deployment: Deployment) -> Usage:
    """The provider's usage, or the gateway's count of it."""
    if answer.usage is not None:
        return answer.usage
    return await tokens.count_chat_usage(deployment.spec.remote_model, request, answer.message)


def cost_of(spec: ModelSpec | None, usage: Usage | None) -> float:
    """US dollars, at the deployment's prices per million input and output tokens."""
    if spec is None or usage is None:
        return 0.0
    return (usage.prompt_tokens * spec.prices.input + usage.completion_tokens * spec.prices.output) / 1_000_000


def _base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def completion_document(answer: Answer, deployment: str, usage: Usage) -> dict[str, Any]:
    """An OpenAI ``chat.completion``; ``model`` is the deployment that answered."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment,
        "choices": [{"index": 0, "message": answer.message, "finish_reason": answer.finish_reason, "logprobs": None}],
        "usage": usage.document(),
    }


class Gateway:
    def __init__(
        self,
        *,
        deployments: Deployments,
        board: Board,
        recorder: Recorder,
        budgets: Budgets,
        keys: KeyCache,
        providers: Mapping[str, Provider],
        settings: GatewaySettings,
        http: Http,
        leases: TurnLeases,
    ) -> None:
        self.deployments = deployments
        self.board = board
        self.recorder = recorder
        self.budgets = budgets
        self._keys = keys
        self._providers = providers
        self._settings = settings
        self._http = http
        self._keyed: dict[str, tuple[CallContext, asyncio.Future[dict[str, Any]]]] = {}
        """The calls with an idempotency key in flight: a request of the same key waits for its answer."""
        self.leases = leases
        """The keys of the calls in flight across control planes (PostgreSQL)."""

    @classmethod
    async def open(cls, pool: Pool, bus: Bus, settings: GatewaySettings, credentials: Credentials) -> "Gateway":
        """The gateway of a control plane: its providers share one HTTP connection pool. With a local model
        server, the platform's ``local`` deployment is registered if it is not yet."""
        deployments = Deployments(pool, no_llm=bool(settings.no_llm))
        if settings.local_model_url:
            await deployments.register(PLATFORM, LOCAL)
        http = Http()
        return cls(
            deployments=deployments,
            board=Board(await HealthBucket.open(bus), settings),
            recorder=Recorder(pool),
            budgets=Budgets(pool),
            keys=KeyCache(credentials),
            providers={
                "openai": OpenAIProvider(http),
                "local": LocalProvider(http),
                "anthropic": AnthropicProvider(http),
                "mock": MockProvider(),
            },
            settings=settings,
            http=http,
            leases=TurnLeases(pool),
        )

    async def reconfigure(self, settings: GatewaySettings) -> None:
        """Take on reloaded settings: the calls started from now on go by them. A local model server named
        for the first time gets the platform's ``local`` deployment, as at a start (first: it may fail, and a
        reload that fails changes nothing)."""
        if settings.local_model_url and not self._settings.local_model_url:
            await self.deployments.register(PLATFORM, LOCAL)
        self._settings = settings
        self.board.reconfigure(settings)
        self.deployments.reconfigure(no_llm=bool(settings.no_llm))

    def forget_credential(self, scope: str, name: str) -> None:
        """The secret ``name`` of ``scope`` changed: the next call reveals it again."""
        self._keys.forget(scope, name)

    async def run(self, stop: asyncio.Event) -> None:
        """Record calls, share health and sweep leases until ``stop``; then write the records still queued. The token
        encodings are loaded meanwhile, off the event loop (a count asked for before waits for its own)."""
        await asyncio.gather(
            self.recorder.run(stop), self.board.run(stop), self.leases.run(stop), asyncio.to_thread(tokens.load)
        )

    async def close(self) -> None:
        await self._http.close()

    # --- the calls -------------------------------------------------------------------------------------

    async def chat(self, body: Mapping[str, Any], *, context: CallContext) -> dict[str, Any]:
        """One chat completion (``stream`` false), as an OpenAI ``chat.completion``."""
        request = parse_chat(body)
        if request.stream:
            raise Invalid("validation-error", "a streamed completion is asked for through Gateway.stream", "stream")
        key = context.idempotency_key
        if key is None:
            return await self._chat(request, context)
        keyed = self._keyed.get(key)
        if keyed is None:
            call = self.leases.call_once(context.tenant, key, lambda: self._chat(request, context), first=context.first)
            keyed = self._keyed[key] = (context, asyncio.ensure_future(call))
            keyed[1].add_done_callback(lambda done: self._forget(key, done))
        # A caller that leaves (its worker died, its request timed out) leaves the call to finish and be
        # recorded, since the turn tried again is answered from that record.
        return await asyncio.shield(keyed[1])

    def cancel_calls(self, tenant: str, run_id: str, task_ids: Collection[str]) -> int:
        """Stop the keyed calls in flight for these tasks of a run (it was cancelled); how many were."""
        stopped = 0
        for called, running in list(self._keyed.values()):
            if called.tenant == tenant and called.run_id == run_id and called.task_id in task_ids:
                stopped += running.cancel(CANCELLED_RUN)
        return stopped

    def _forget(self, key: str, done: "asyncio.Future[dict[str, Any]]") -> None:
        self._keyed.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: the callers that stayed got it, and one that left needs not

    async def _chat(self, request: ChatRequest, context: CallContext) -> dict[str, Any]:
        chain = await self.deployments.chain(context.tenant, request.model, "chat")
        trace = Trace(span=telemetry.start(request))
        try:
            answer, deployment = await self._try_chain(context, chain, trace, request, self._chat_once(request))
        except (Refused, asyncio.CancelledError) as error:
            await self._record_failed(context, request, chain, trace, error, stream=False)
            raise
        usage = await _usage_of(answer, request, deployment)
        await self.board.succeeded(
            deployment.key, trace.attempts[-1].latency_ms, usage.prompt_tokens + usage.completion_tokens
        )
        completion = completion_document(answer, deployment.name, usage)
        await self._record(
            context, request, chain, trace, deployment=deployment.name, outcome="ok", error=None, usage=usage,
            completion=completion, stream=False,
        )  # fmt: skip
        return completion

    def _chat_once(self, request: ChatRequest) -> Callable[[Deployment, Target], Awaitable[Answer]]:
        async def attempt(deployment: Deployment, target: Target) -> Answer:
            return await self._providers[deployment.spec.provider].chat(target, request)

        return attempt

    async def stream(self, body: Mapping[str, Any], *, context: CallContext) -> ChatStream:
        """A streamed chat completion, opened: failover happens until the first piece arrives, so that a
        stream that cannot start is refused like any call; what comes after is the stream's."""
        request = parse_chat(body)
        key = context.idempotency_key
        if key is not None and (recorded := await self.recorder.replay(context.tenant, key)) is not None:
            return ChatStream.replay(request, recorded)
        chain = await self.deployments.chain(context.tenant, request.model, "chat")
        trace = Trace(span=telemetry.start(request))

        async def attempt(deployment: Deployment, target: Target) -> tuple[Piece, Any, Target]:
            pieces = self._providers[deployment.spec.provider].stream(target, request).__aiter__()
            try:
                first = await anext(pieces)
            except StopAsyncIteration:
                raise Failure("garbage", "the stream ended before its first piece") from None
            except Failure as failure:
                if failure.kind != "stream-cut":
                    raise
                # cut before its first piece, a stream is a connection that failed: the next deployment may answer
                raise Failure("refused", failure.detail) from None
            except BaseException:
                await pieces.aclose()  # type: ignore[attr-defined]
                raise
            trace.first_piece = time.perf_counter()
            return first, pieces, target

        try:
            (first, pieces, target), deployment = await self._try_chain(context, chain, trace, request, attempt)
        except (Refused, asyncio.CancelledError) as error:
            await self._record_failed(context, request, chain, trace, error, stream=True)
            raise
        await self.board.succeeded(deployment.key, trace.ttft_ms() or 0.0, 0)

        async def finished(completion: dict[str, Any], usage: Usage, outcome: str, error: str | None) -> None:
            self.board.count_tokens(deployment.key, usage.prompt_tokens + usage.completion_tokens)
            await self._record(
                context, request, chain, trace, deployment=deployment.name, outcome=outcome, error=error,
                usage=usage, completion=completion, stream=True,
            )  # fmt: skip

        model = deployment.spec.remote_model
        return ChatStream(request, deployment.name, model, first, pieces, target.timeout, finished)

    async def embed(self, body: Mapping[str, Any], *, context: CallContext) -> dict[str, Any]:
        """Embeddings of one input or a list of them, as OpenAI's ``list`` of ``embedding``."""
        request = parse_embedding(body)
        chain = await self.deployments.chain(context.tenant, request.model, "embedding")
        trace = Trace(span=telemetry.start(request))

        async def attempt(deployment: Deployment, target: Target) -> Any:
            return await self._providers[deployment.spec.provider].embed(target, request)

        try:
            answer, deployment = await self._try_chain(context, chain, trace, request, attempt)
        except (Refused, asyncio.CancelledError) as error:
            await self._record_failed(context, request, chain, trace, error, stream=False)
            raise
        model = deployment.spec.remote_model
        usage = answer.usage or await asyncio.to_thread(tokens.embedding_usage, model, request.texts)
        prompt = usage.prompt_tokens
        await self.board.succeeded(deployment.key, trace.attempts[-1].latency_ms, prompt)
        encode = _base64 if request.encoding_format == "base64" else list
        document = {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(answer.vectors)],
            "model": deployment.name,
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }
        shape = {"vectors": len(answer.vectors), "dimensions": len(answer.vectors[0]) if answer.vectors else 0}
        await self._record(
            context, request, chain, trace, deployment=deployment.name, outcome="ok", error=None, usage=usage,
            completion=shape, stream=False,
        )  # fmt: skip
        return document

    # --- down the chain --------------------------------------------------------------------------------

    async def _target(self, deployment: Deployment, time_left: float) -> Target:
        spec = deployment.spec
        endpoint = self._settings.local_model_url if spec.provider == "local" else spec.endpoint
        if spec.provider == "local" and not endpoint:
            raise Failure("refused", "AF_LOCAL_MODEL_URL is not set: no local model server to call")
        api_key = None
        if spec.credential is not None:
            try:
                api_key = await self._keys.key(deployment.scope, spec.credential, spec.name)
            except NotFound as missing:
                raise Failure("credential", missing.detail) from None
        own = spec.timeout_seconds or self._settings.llm_attempt_timeout_seconds
        return Target(spec=spec, endpoint=endpoint, api_key=api_key, timeout=min(own, time_left))

    async def _try_chain(
        self,
        context: CallContext,
        chain: Chain,
        trace: Trace,
        request: ChatRequest | EmbeddingRequest,
        attempt: Callable[[Deployment, Target], Awaitable[T]],
    ) -> tuple[T, Deployment]:
        await self.budgets.check(context.tenant, context.run_id)
        deadline = time.monotonic() + self._settings.llm_deadline_seconds
        order, skipped = routing.plan(chain.deployments, lambda d: self.board.view(d.key, median=False), self._settings)
        failures: list[tuple[Deployment, Failure]] = []
        larger_than = 0
        """After a context-length error: only deployments whose window is larger than this."""
        for deployment in order:
            if (window := deployment.spec.context_window) <= larger_than:
                reason = f"its window of {window} tokens is no larger than one the prompt did not fit ({larger_than})"
                skipped.append(routing.Skipped(deployment, reason))
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                failures.append((deployment, Failure("timeout", "the call's deadline passed before its turn")))
                break
            started = time.perf_counter()
            try:
                target = await self._target(deployment, left)
                try:
                    async with asyncio.timeout(target.timeout):
                        result = await attempt(deployment, target)
                except TimeoutError:
                    raise Failure("timeout", f"no answer within {target.timeout:g}s") from None
                except Failure as failure:
                    raise failure.without(target.api_key) from None
            except Failure as failure:
                latency = trace.elapsed_ms(started)
                trace.attempts.append(
                    AttemptRecord(
                        deployment.name, deployment.spec.provider, failure.kind, latency, failure.detail,
                        failure.status, failure.retry_after,
                    )
                )  # fmt: skip
                await self.board.failed(deployment.key, failure, latency)
                failures.append((deployment, failure))
                if failure.kind == "context-length":
                    larger_than = max(larger_than, deployment.spec.context_window)
                elif not failure.fails_over:
                    trace.skip(skipped)
                    raise UpstreamFailed(
                        "provider-error", f"{deployment.name} refused the request: {failure}"
                    ) from None
                continue
            trace.attempts.append(
                AttemptRecord(deployment.name, deployment.spec.provider, "ok", trace.elapsed_ms(started))
            )
            trace.skip(skipped)
            return result, deployment
        trace.skip(skipped)
        raise self._exhausted(chain, request.model, failures, skipped)

    def _exhausted(
        self, chain: Chain, model: str, failures: list[tuple[Deployment, Failure]], skipped: list[routing.Skipped]
    ) -> Refused:
        tried = [f"{d.name}: {f}" for d, f in failures] + [f"{s.deployment.name}: {s.reason}" for s in skipped]
        what = chain.tier or model
        detail = f"{what}: no deployment answered; " + "; ".join(tried) if tried else f"{what}: no deployment to try"
        kinds = {f.kind for _, f in failures}
        if failures and failures[-1][1].kind == "context-length":  # no larger window was left to try
            return Invalid("context-length-exceeded", detail, "messages")
        # every deployment failing the same way that waiting will not mend: that, not "unavailable"
        if kinds == {"garbage"}:
            return UpstreamFailed("provider-error", detail, "model")
        if kinds == {"credential"}:
            return NotFound("secret-not-found", detail, "model")
        waits = [self.board.view(d.key, median=False).cooling_seconds for d in chain.deployments]
        soonest = min((w for w in waits if w > 0), default=None)
        return Unavailable("no-healthy-deployment", detail, "model", retry_after=soonest)

    # --- records ---------------------------------------------------------------------------------------

    async def _record_failed(
        self,
        context: CallContext,
        request: ChatRequest | EmbeddingRequest,
        chain: Chain,
        trace: Trace,
        error: BaseException,
        *,
        stream: bool,
    ) -> None:
        if isinstance(error, Refused):
            kind, detail = error.kind, error.detail
        else:  # cancelled: by the run's cancel (CANCELLED_RUN), or its caller went away
            kind, detail = "cancelled", str(error) or "the caller left"
        last = trace.attempts[-1].deployment if trace.attempts else None
        await self._record(
            context, request, chain, trace, deployment=last, outcome=kind, error=detail, usage=None,
            completion=None, stream=stream,
        )  # fmt: skip

    async def _record(
        self,
        context: CallContext,
        request: ChatRequest | EmbeddingRequest,
        chain: Chain,
        trace: Trace,
        *,
        deployment: str | None,
        outcome: str,
        error: str | None,
        usage: Usage | None,
        completion: dict[str, Any] | None,
        stream: bool,
    ) -> None:
        policy = await self.recorder.policy(context.tenant)
        key = context.idempotency_key
        spec = next((d.spec for d in chain.deployments if d.name == deployment), None)
        response = None
        if completion is not None:
            is_chat = "choices" in completion
            keep = policy == "full" or (key is not None and outcome == "ok")
            response = msgspec.json.encode(completion if keep or not is_chat else answer_metadata(completion)).decode()
        call = LlmCall(
            id=str(uuid.uuid4()),
            tenant=context.tenant,
            run_id=context.run_id,
            task_id=context.task_id,
            attempt=context.attempt,
            turn=context.turn,
            caller=context.caller,
            idempotency_key=key,
            requested=request.model,
            tier=chain.tier,
            deployment=deployment,
            outcome=outcome,
            error=error,
            attempts=trace.attempts_json(),
            stream=stream,
            latency_ms=trace.elapsed_ms(),
            ttft_ms=trace.ttft_ms(),
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            tokens_estimated=usage.estimated if usage else False,
            cost_usd=cost_of(spec, usage),
            record=policy,
            prompt=prompt_of(request, policy),
            response=response,
        )
        metered = None
        if usage is not None and spec is not None:
            metered = UsageRecord(
                tenant=call.tenant,
                usage_key=key or call.id,
                call_id=call.id,
                run_id=call.run_id,
                task_id=call.task_id,
                caller=call.caller,
                requested=call.requested,
                tier=call.tier,
                deployment=spec.name,
                input_tokens=call.input_tokens,
                output_tokens=call.output_tokens,
                cost_usd=call.cost_usd,
            )
            self.budgets.spent(call.tenant, call.run_id, call.input_tokens + call.output_tokens, call.cost_usd)
        telemetry.observe(call, trace, spec)
        await self.recorder.record(call, metered, durable=key is not None and outcome == "ok")
