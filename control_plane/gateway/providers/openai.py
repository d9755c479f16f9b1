"""The ``openai`` provider: any OpenAI-compatible HTTP endpoint (OpenAI, vLLM, llama.cpp's server, Ollama,
OpenRouter…), over the gateway's HTTP client (``transport``): chat completions with tools and response
formats, streamed (SSE) or whole, with usage; embeddings. The ``local`` provider (``providers.local``) is this
one at ``AF_LOCAL_MODEL_URL``, asking for tool calls through a JSON schema.

Answers are checked against the protocol's shape: anything else is a ``garbage`` failure, so that a broken
upstream never reaches a caller as a malformed completion.
"""

import email.utils
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec

from control_plane.gateway.documents import OpenAIOptions, options_of
from control_plane.gateway.failures import Failure
from control_plane.gateway.providers.base import Answer, Embeddings, Piece, Target, Usage
from control_plane.gateway.providers.transport import Http
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest, ToolCall, upstream_body


class _Message(msgspec.Struct):
    content: str | None = None
    tool_calls: list[ToolCall] | None = None


class _Choice(msgspec.Struct):
    message: _Message
    finish_reason: str | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct):
    choices: list[_Choice]
    usage: _Usage | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class _ChunkChoice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)
    finish_reason: str | None = None


class _Chunk(msgspec.Struct):
    choices: list[_ChunkChoice] = []
    usage: _Usage | None = None
    error: dict[str, Any] | None = None
    """What a provider sends in place of a chunk when the stream fails after it began."""


class _Vector(msgspec.Struct):
    embedding: list[float]
    index: int = 0


class _EmbeddingAnswer(msgspec.Struct):
    data: list[_Vector]
    usage: _Usage | None = None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, or ``Retry-After`` in seconds or as a date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _error_message(body: bytes) -> tuple[str, str]:
    """The provider's error message and code (OpenAI: ``{"error": {"message", "code"}}``)."""
    try:
        document = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:200].decode(errors="replace").strip(), ""
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))[:500], str(error.get("code") or error.get("type") or "")
    if isinstance(error, str):
        return error[:500], ""
    return str(document)[:200], ""


_CONTEXT_HINTS = ("context length", "context_length", "maximum context", "too many tokens", "prompt is too long")


def status_failure(status: int, body: bytes, headers: Mapping[str, str]) -> Failure:
    """The failure an error status stands for."""
    message, code = _error_message(body)
    detail = message or f"HTTP {status}"
    if status == 429:
        return Failure("rate-limited", detail, status=status, retry_after=retry_after(headers))
    if status >= 500:
        return Failure("server-error", detail, status=status, retry_after=retry_after(headers))
    if code == "context_length_exceeded" or any(hint in message.lower() for hint in _CONTEXT_HINTS):
        return Failure("context-length", detail, status=status)
    if status in (401, 403, 404):
        return Failure("auth", detail, status=status)
    return Failure("content", detail, status=status)


def _usage(usage: _Usage | None) -> Usage | None:
    if usage is None:
        return None
    return Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)


class OpenAIProvider:
    def __init__(self, http: Http, options: type[OpenAIOptions] = OpenAIOptions) -> None:
        self._http = http
        self._options = options
        """The type of its deployments' options (``local``'s have more)."""

    def _headers(self, target: Target) -> dict[str, str]:
        headers = dict(options_of(target.spec, self._options).headers)
        if target.api_key:
            headers["Authorization"] = f"Bearer {target.api_key}"
        if target.spec.provider == "local":
            # llama.cpp's server closes a kept-alive connection after an answer that took longer than its
            # keep-alive (5 s), without saying so: the next call on it would fail. A new loopback connection
            # per call costs nothing beside a model's time on the CPU.
            headers["Connection"] = "close"
        return headers

    async def _post(self, target: Target, path: str, body: dict[str, Any]) -> bytes:
        url = target.endpoint.rstrip("/") + path
        reply = await self._http.post(url, msgspec.json.encode(body), self._headers(target), seconds=target.timeout)
        if reply.status >= 400:
            raise status_failure(reply.status, reply.body, reply.headers)
        return reply.body

    async def chat(self, target: Target, request: ChatRequest) -> Answer:
        body = upstream_body(request, target.spec.remote_model)
        body.pop("stream_options", None)
        body["stream"] = False
        raw = await self._post(target, "/chat/completions", body)
        try:
            completion = msgspec.json.decode(raw, type=_Completion)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise Failure("garbage", f"the answer is not a chat completion: {error}"[:300]) from None
        if not completion.choices:
            raise Failure("garbage", "the answer has no choices")
        choice = completion.choices[0]
        message: dict[str, Any] = {"role": "assistant", "content": choice.message.content}
        if choice.message.tool_calls:
            message["tool_calls"] = msgspec.to_builtins(choice.message.tool_calls)
        finish = choice.finish_reason or ("tool_calls" if choice.message.tool_calls else "stop")
        return Answer(message=message, finish_reason=finish, usage=_usage(completion.usage))

    async def stream(self, target: Target, request: ChatRequest) -> AsyncIterator[Piece]:
        body = upstream_body(request, target.spec.remote_model)
        body["stream"] = True
        body["stream_options"] = {**(request.stream_options or {}), "include_usage": True}
        url = target.endpoint.rstrip("/") + "/chat/completions"
        ended = False
        async with self._http.stream(
            url, msgspec.json.encode(body), self._headers(target), seconds=target.timeout
        ) as response:
            if response.status >= 400:
                raise status_failure(response.status, response.error_body, response.headers)
            async for line in response.lines:
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    ended = True
                    break
                for piece in _pieces(data):
                    ended = ended or piece.finish_reason is not None
                    yield piece
        if not ended:
            raise Failure("stream-cut", "the stream ended before its last chunk")

    async def embed(self, target: Target, request: EmbeddingRequest) -> Embeddings:
        body: dict[str, Any] = msgspec.to_builtins(request)
        body["model"] = target.spec.remote_model
        body.pop("encoding_format", None)  # floats from the provider; the gateway encodes what the caller asked
        raw = await self._post(target, "/embeddings", body)
        try:
            answer = msgspec.json.decode(raw, type=_EmbeddingAnswer)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise Failure("garbage", f"the answer is not a list of embeddings: {error}"[:300]) from None
        if len(answer.data) != len(request.texts):
            raise Failure("garbage", f"{len(answer.data)} embeddings for {len(request.texts)} inputs")
        vectors = [item.embedding for item in sorted(answer.data, key=lambda item: item.index)]
        return Embeddings(vectors=vectors, usage=_usage(answer.usage))


def _pieces(data: str) -> list[Piece]:
    try:
        chunk = msgspec.json.decode(data, type=_Chunk)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise Failure("garbage", f"a stream chunk is not a chat completion chunk: {error}"[:300]) from None
    if chunk.error is not None:
        raise Failure("server-error", f"the stream failed: {str(chunk.error.get('message', ''))[:300]}")
    pieces = [
        Piece(content=c.delta.content, tool_calls=c.delta.tool_calls, finish_reason=c.finish_reason)
        for c in chunk.choices[:1]
    ]
    if chunk.usage is not None:
        pieces.append(Piece(usage=_usage(chunk.usage)))
    return pieces
