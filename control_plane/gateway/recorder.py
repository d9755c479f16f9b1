"""Recording every model call: one row with every attempt, and the usage it is metered with, written in
batches off the caller's path (both in one statement).

A call with an idempotency key (a run's model turn) is answered only once its row is committed, since a
redelivered turn is answered from it; any other call is answered at once and its row follows in the next
batch (within ``FLUSH_SECONDS``; rows still queued at shutdown are written before the control plane stops).

What a row keeps of the prompt and the response depends on the tenant's ``record`` policy: ``full`` keeps
them as sent; ``metadata`` keeps their shape only (roles, lengths, tool names), and the response of a call
with an idempotency key, which its replay needs.
"""

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry.trace import Span

from bus.messages import json_text
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest, text_of
from control_plane.gateway.routing import Skipped
from registry import llm_calls, models
from registry.db import Pool
from registry.llm_calls import LlmCall
from registry.usage import UsageRecord

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
BATCH = 500
POLICY_TTL_SECONDS = 5.0


@dataclass
class AttemptRecord:
    deployment: str
    provider: str
    outcome: str
    """``ok`` or the failure's kind."""
    latency_ms: float
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None

    def document(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Trace:
    """What one call did, gathered as it goes: the attempts, and the timings."""

    started: float = field(default_factory=time.perf_counter)
    attempts: list[AttemptRecord] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    first_piece: float | None = None
    span: Span | None = None
    """The call's span, while tracing is on."""

    def elapsed_ms(self, since: float | None = None) -> float:
        return (time.perf_counter() - (self.started if since is None else since)) * 1000

    def ttft_ms(self) -> float | None:
        return None if self.first_piece is None else (self.first_piece - self.started) * 1000

    def skip(self, skipped: Sequence[Skipped]) -> None:
        """Note the deployments the call left out, and why."""
        self.skipped = [{"deployment": s.deployment.name, "outcome": "skipped", "error": s.reason} for s in skipped]

    def attempts_json(self) -> str:
        return json_text([a.document() for a in self.attempts] + self.skipped)


def chat_metadata(request: ChatRequest) -> list[dict[str, Any]]:
    """The shape of a prompt, without its words."""
    shapes = []
    for message in request.messages:
        shape: dict[str, Any] = {"role": message.role, "chars": len(text_of(message.content))}
        if message.tool_calls:
            shape["tool_calls"] = [call.function.name for call in message.tool_calls]
        shapes.append(shape)
    return shapes


def answer_metadata(completion: dict[str, Any]) -> dict[str, Any]:
    """The shape of a chat completion, without its words."""
    choice = completion["choices"][0]
    message = choice["message"]
    shape: dict[str, Any] = {"finish_reason": choice["finish_reason"], "chars": len(message.get("content") or "")}
    if message.get("tool_calls"):
        shape["tool_calls"] = [call["function"]["name"] for call in message["tool_calls"]]
    return shape


def prompt_of(request: ChatRequest | EmbeddingRequest, policy: str) -> str:
    if isinstance(request, EmbeddingRequest):
        kept: Any = request.texts if policy == "full" else [{"chars": len(t)} for t in request.texts]
        return json_text({"input": kept})
    if policy == "full":
        return json_text(
            {"messages": request.messages, "tools": request.tools, "response_format": request.response_format}
        )
    return json_text({"messages": chat_metadata(request)})


class Recorder:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._queue: list[_Queued] = []
        self._wake = asyncio.Event()
        self._urgent = False
        self._policies: dict[str, tuple[str, float]] = {}

    async def policy(self, tenant: str) -> str:
        cached = self._policies.get(tenant)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        policy = await models.record_policy(self._pool, tenant)
        self._policies[tenant] = (policy, time.monotonic() + POLICY_TTL_SECONDS)
        return policy

    async def set_policy(self, tenant: str, policy: str) -> None:
        await models.set_record_policy(self._pool, tenant, policy)
        self._policies.pop(tenant, None)

    async def replay(self, tenant: str, idempotency_key: str) -> dict[str, Any] | None:
        """The completion answered to the call of this key, if one was answered."""
        recorded = await llm_calls.replay(self._pool, tenant, idempotency_key)
        if recorded is None:
            return None
        completion: dict[str, Any] = msgspec.json.decode(recorded)
        return completion

    async def record(self, call: LlmCall, metered: UsageRecord | None, *, durable: bool) -> None:
        """Queue the row (and its usage); with ``durable``, return once it is committed (a failed write is
        logged: the call's answer stands)."""
        done: asyncio.Future[None] | None = asyncio.get_running_loop().create_future() if durable else None
        self._queue.append(_Queued(call, metered, done))
        self._urgent = self._urgent or durable
        self._wake.set()
        if done is not None:
            try:
                await done
            except Exception as error:
                log.warning("the record of model call %s was not written: %s", call.id, error)

    async def run(self, stop: asyncio.Event) -> None:
        """Write queued rows in batches until ``stop``, then the rest."""
        while not stop.is_set() or self._queue:
            if not self._queue:
                self._wake.clear()
                stopping = asyncio.ensure_future(stop.wait())
                waking = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopping, waking}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                waking.cancel()
                continue
            if not self._urgent and len(self._queue) < BATCH and not stop.is_set():
                await asyncio.sleep(FLUSH_SECONDS)  # gather a batch, unless a caller waits for its row
            batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
            self._urgent = any(queued.done is not None for queued in self._queue)
            await self._write(batch)

    async def _write(self, batch: Sequence["_Queued"]) -> None:
        metered = [queued.metered for queued in batch if queued.metered is not None]
        try:
            await llm_calls.insert(self._pool, [queued.call for queued in batch], metered)
        except Exception as error:
            log.warning("cannot record %d model calls: %s", len(batch), error)
            for queued in batch:
                if queued.done is not None and not queued.done.done():
                    queued.done.set_exception(error)
            return
        for queued in batch:
            if queued.done is not None and not queued.done.done():
                queued.done.set_result(None)


@dataclass(frozen=True, slots=True)
class _Queued:
    call: LlmCall
    metered: UsageRecord | None
    done: asyncio.Future[None] | None
