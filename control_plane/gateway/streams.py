"""A streamed chat completion once it has started: OpenAI ``chat.completion.chunk`` documents, one per piece.

The first piece is in hand when a ``ChatStream`` is made (failover is over by then). Each next piece must
come within the attempt's timeout; a stream that fails or stops short ends with one last document
``{"error": {...}}`` of type ``stream-interrupted`` (what OpenAI's clients raise as an API error), never a
hang. When it ends, however it ends, the pieces gathered so far are handed to ``finished`` (the record).
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from control_plane.gateway import tokens
from control_plane.gateway.failures import Failure
from control_plane.gateway.providers.base import Answer, Piece, Usage
from control_plane.gateway.requests import ChatRequest

PROBLEM_TYPE = "urn:agentflow:problem:stream-interrupted"
_ENDING: set["asyncio.Future[None]"] = set()
"""Streams' endings under way, held until done (the event loop keeps only weak references to tasks)."""
Finished = Callable[[dict[str, Any], Usage, str, str | None], Awaitable[None]]
"""Told the completion gathered, its usage, the outcome (``ok``, ``stream-interrupted``, ``cancelled``) and
the error."""


class _Gathered:
    """The completion the pieces add up to."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def add(self, piece: Piece) -> None:
        if piece.content:
            self.content.append(piece.content)
        for delta in piece.tool_calls or []:
            call = self.calls.setdefault(
                int(delta.get("index", 0)), {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
            )
            call["id"] = delta.get("id") or call["id"]
            function = delta.get("function") or {}
            call["function"]["name"] += function.get("name") or ""
            call["function"]["arguments"] += function.get("arguments") or ""
        self.finish_reason = piece.finish_reason or self.finish_reason
        self.usage = piece.usage or self.usage

    def answer(self) -> Answer:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) if self.content else None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        return Answer(message=message, finish_reason=self.finish_reason or "stop", usage=self.usage)


def _pieces_of(completion: dict[str, Any]) -> list[Piece]:
    """A recorded completion as the pieces of a stream (a replayed turn asked for as a stream)."""
    choice = completion["choices"][0]
    message = choice["message"]
    pieces = []
    if message.get("content"):
        pieces.append(Piece(content=message["content"]))
    if message.get("tool_calls"):
        pieces.append(Piece(tool_calls=[{"index": i, **call} for i, call in enumerate(message["tool_calls"])]))
    usage = completion.get("usage") or {}
    counted = Usage(prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0))
    pieces.append(Piece(finish_reason=choice["finish_reason"], usage=counted))
    return pieces


async def _iterate(pieces: list[Piece]) -> AsyncIterator[Piece]:
    for piece in pieces:
        yield piece


async def _nothing(completion: dict[str, Any], usage: Usage, outcome: str, error: str | None) -> None:
    """A replay is not a call: it records nothing."""


class ChatStream:
    def __init__(
        self,
        request: ChatRequest,
        deployment: str,
        model: str,
        first: Piece,
        rest: AsyncIterator[Piece],
        idle_timeout: float,
        finished: Finished,
    ) -> None:
        self.request = request
        self.deployment = deployment
        self._model = model
        """The provider's name of the model, whose tokens are counted if the provider reports none."""
        self._first = first
        self._rest = rest
        self._idle_timeout = idle_timeout
        self._finished = finished
        self._base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": deployment,
        }

    @classmethod
    def replay(cls, request: ChatRequest, completion: dict[str, Any]) -> "ChatStream":
        pieces = _pieces_of(completion)
        model = str(completion["model"])
        return cls(request, model, model, pieces[0], _iterate(pieces[1:]), 1.0, _nothing)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

    async def _next(self) -> Piece | None:
        try:
            async with asyncio.timeout(self._idle_timeout):
                return await anext(self._rest)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise Failure("timeout", f"no piece of the stream within {self._idle_timeout:g}s") from None

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """The chunks, then (if the request's ``stream_options`` ask for it) one with the usage."""
        gathered = _Gathered()
        outcome: str = "cancelled"
        error: str | None = "the caller left before the stream's end"
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            piece: Piece | None = self._first
            while piece is not None:
                gathered.add(piece)
                delta: dict[str, Any] = {}
                if piece.content:
                    delta["content"] = piece.content
                if piece.tool_calls:
                    delta["tool_calls"] = piece.tool_calls
                if delta or piece.finish_reason:
                    yield self._chunk(delta, piece.finish_reason)
                piece = await self._next()
            if gathered.finish_reason is None:
                raise Failure("stream-cut", "the stream ended before its last piece")
            outcome, error = "ok", None
            if (self.request.stream_options or {}).get("include_usage"):
                yield {**self._base, "choices": [], "usage": (await self._usage(gathered)).document()}
        except Failure as failure:
            outcome, error = "stream-interrupted", f"{self.deployment}: {failure}"
            yield {"error": {"message": error, "type": PROBLEM_TYPE, "code": "stream-interrupted"}}
        finally:
            # A caller that leaves cancels this generator: its ending (the provider's stream closed, the call
            # recorded) is shielded from that, so that it is carried out all the same.
            ending = asyncio.ensure_future(self._end(gathered, outcome, error))
            _ENDING.add(ending)
            ending.add_done_callback(_ENDING.discard)
            await asyncio.shield(ending)

    async def _end(self, gathered: _Gathered, outcome: str, error: str | None) -> None:
        close = getattr(self._rest, "aclose", None)
        if close is not None:
            await close()
        answer = gathered.answer()
        usage = await self._usage(gathered)
        completion = {
            **self._base,
            "object": "chat.completion",
            "choices": [{"index": 0, "message": answer.message, "finish_reason": answer.finish_reason}],
            "usage": usage.document(),
        }
        await self._finished(completion, usage, outcome, error)

    async def _usage(self, gathered: _Gathered) -> Usage:
        if gathered.usage is not None:
            return gathered.usage
        return await tokens.count_chat_usage(self._model, self.request, gathered.answer().message)
