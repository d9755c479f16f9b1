"""The ``anthropic`` provider: Anthropic's Messages API (``POST /v1/messages``, ``x-api-key`` and
``anthropic-version`` headers), over the gateway's HTTP client (``transport``), translated to and from the
OpenAI shape the gateway speaks.

Going out: system and developer messages become ``system``; an assistant's ``tool_calls`` become
``tool_use`` blocks and each ``tool`` message a ``tool_result`` block of a user turn (consecutive turns of
one role are merged, as the API wants them alternating); tools, ``tool_choice``, ``stop`` and the answer's
limit (which the API requires: the deployment's ``options.max_tokens`` when the request names none). A JSON
``response_format`` becomes one more tool whose input schema is the answer's, forced when the request
offers no tools of its own: its input comes back as the answer's text.

Coming back: text blocks become ``content``, ``tool_use`` blocks ``tool_calls``, ``stop_reason`` the
``finish_reason``, and ``usage`` (input tokens, cached ones included, and output tokens) OpenAI's. A
stream's events (``message_start``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``,
``message_stop``) become pieces; a stream is over only at ``message_stop``. Errors are Anthropic's
``{"type": "error", "error": {"type", "message"}}``, mapped like any provider's (429 and 529 retryable,
``prompt is too long`` a context-length error).
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from control_plane.gateway.documents import AnthropicOptions, options_of
from control_plane.gateway.failures import Failure, Kind
from control_plane.gateway.providers.base import Answer, Embeddings, Piece, Target, Usage
from control_plane.gateway.providers.openai import status_failure
from control_plane.gateway.providers.transport import Http
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest, Message, schema_of

ANSWER_TOOL = "json_answer"
"""The tool a JSON ``response_format`` becomes."""
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class _Block(msgspec.Struct):
    """A content block; the kinds the gateway has no use for (thinking…) are passed over."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None

    @property
    def prompt(self) -> int | None:
        parts = (self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens)
        return None if self.input_tokens is None else sum(p or 0 for p in parts)


class _Message(msgspec.Struct):
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage | None = None


class _Event(msgspec.Struct):
    """One streamed event: ``type`` says which of the other fields it has."""

    type: str
    message: _Message | None = None
    index: int = 0
    content_block: _Block | None = None
    delta: dict[str, Any] | None = None
    usage: _Usage | None = None
    error: dict[str, Any] | None = None


# --- the request -----------------------------------------------------------------------------------


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        raise Failure("content", "a tool call's arguments are not JSON: Anthropic takes them as an object") from None


def _image(part: dict[str, Any]) -> dict[str, Any]:
    url = str((part.get("image_url") or {}).get("url", ""))
    if url.startswith("data:") and ";base64," in url:
        media, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: str | list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part.get("type") == "text" and part.get("text"):  # the API refuses empty text blocks
            blocks.append({"type": "text", "text": str(part["text"])})
        elif part.get("type") == "image_url":
            blocks.append(_image(part))
    return blocks


def _turn(message: Message) -> tuple[str, list[dict[str, Any]]]:
    """A non-system message as an Anthropic turn: its role and its blocks."""
    if message.role == "tool":
        result = {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": _blocks(message.content)}
        return "user", [result]
    blocks = _blocks(message.content)
    for call in message.tool_calls or []:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _arguments(call.function.arguments),
            }
        )
    return ("assistant" if message.role == "assistant" else "user"), blocks


def _tool_choice(request: ChatRequest, forced_answer: bool) -> dict[str, Any] | None:
    choice = request.tool_choice
    if forced_answer:
        made: dict[str, Any] | None = {"type": "tool", "name": ANSWER_TOOL}
    elif choice is None or choice == "auto":
        made = {"type": "auto"} if request.parallel_tool_calls is False else None
    elif choice == "required":
        made = {"type": "any"}
    elif choice == "none":
        made = {"type": "none"}
    else:
        made = {"type": "tool", "name": str((choice.get("function") or {}).get("name", ""))}
    if made is not None and request.parallel_tool_calls is False and made["type"] != "none":
        made["disable_parallel_tool_use"] = True
    return made


def messages_body(request: ChatRequest, target: Target) -> dict[str, Any]:
    """The request as the Messages API takes it."""
    options = options_of(target.spec, AnthropicOptions)
    system = [text for m in request.messages if m.role in ("system", "developer") for text in _texts(m)]
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            continue
        role, blocks = _turn(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": target.spec.remote_model,
        "messages": turns,
        "max_tokens": request.answer_limit or options.max_tokens,
    }
    if system:
        body["system"] = "\n\n".join(system)
    tools = [
        {
            "name": t.function.name,
            "description": t.function.description or "",
            "input_schema": _schema(t.function.parameters),
        }
        for t in request.tools or []
    ]
    answer_schema = _answer_schema(request)
    if answer_schema is not None:
        tools.append(
            {"name": ANSWER_TOOL, "description": "Answer with this tool's input.", "input_schema": answer_schema}
        )
    if tools:
        body["tools"] = tools
        choice = _tool_choice(request, forced_answer=answer_schema is not None and not request.tools)
        if choice is not None:
            body["tool_choice"] = choice
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0..1, OpenAI's 0..2
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    return body


def _texts(message: Message) -> list[str]:
    return [block["text"] for block in _blocks(message.content) if block["type"] == "text"]


def _schema(parameters: dict[str, Any] | None) -> dict[str, Any]:
    return parameters if parameters else {"type": "object", "properties": {}}


def _answer_schema(request: ChatRequest) -> dict[str, Any] | None:
    """The input schema of the answer tool, if the request wants JSON."""
    kind = (request.response_format or {}).get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        schema = schema_of(request) or {}
        return schema if schema.get("type") == "object" else {"type": "object"}  # a tool's input is an object
    return None


# --- the answer ------------------------------------------------------------------------------------


def _usage(usage: _Usage | None, output: int | None = None) -> Usage | None:
    if usage is None or usage.prompt is None:
        return None
    return Usage(
        prompt_tokens=usage.prompt, completion_tokens=output if output is not None else usage.output_tokens or 0
    )


def _finish(stop_reason: str | None, answered_as_json: bool) -> str:
    finish = _FINISH.get(stop_reason or "end_turn", "stop")
    return "stop" if answered_as_json and finish == "tool_calls" else finish  # the answer tool's use is the answer


def answer_of(message: _Message) -> Answer:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    as_json = False
    for block in message.content:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "tool_use" and block.name == ANSWER_TOOL:
            texts.append(json.dumps(block.input if block.input is not None else {}, separators=(",", ":")))
            as_json = True
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise Failure("garbage", "a tool_use block without its id or name")
            arguments = json.dumps(block.input if block.input is not None else {}, separators=(",", ":"))
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        answer["tool_calls"] = calls
    finish = _finish(message.stop_reason, as_json and not calls)
    return Answer(message=answer, finish_reason=finish, usage=_usage(message.usage))


class _StreamState:
    """What a stream's events said so far: which block is which, and the usage."""

    def __init__(self) -> None:
        self.tools: dict[int, int] = {}
        """Block index to the OpenAI index of its tool call."""
        self.answer_blocks: set[int] = set()
        self.prompt: _Usage | None = None
        self.ended = False

    def pieces(self, event: _Event) -> list[Piece]:
        kind = event.type
        if kind == "message_start":
            self.prompt = event.message.usage if event.message is not None else None
        elif kind == "content_block_start" and event.content_block is not None:
            return self._started(event.index, event.content_block)
        elif kind == "content_block_delta" and event.delta is not None:
            return self._delta(event.index, event.delta)
        elif kind == "message_delta":
            stop = (event.delta or {}).get("stop_reason")
            output = event.usage.output_tokens if event.usage is not None else None
            usage = _usage(self.prompt, output)
            return [Piece(finish_reason=_finish(stop, bool(self.answer_blocks) and not self.tools), usage=usage)]
        elif kind == "message_stop":
            self.ended = True
        elif kind == "error":
            error = event.error or {}
            failure: Kind = "rate-limited" if error.get("type") == "rate_limit_error" else "server-error"
            raise Failure(failure, f"the stream failed: {str(error.get('message', ''))[:300]}")
        return []  # ping, content_block_stop, and event kinds added after this was written

    def _started(self, index: int, block: _Block) -> list[Piece]:
        if block.type == "text" and block.text:
            return [Piece(content=block.text)]
        if block.type == "tool_use" and block.name == ANSWER_TOOL:
            self.answer_blocks.add(index)
        elif block.type == "tool_use":
            if not block.id or not block.name:
                raise Failure("garbage", "a tool_use block without its id or name")
            position = self.tools[index] = len(self.tools)
            call = {
                "index": position,
                "id": block.id,
                "type": "function",
                "function": {"name": block.name, "arguments": ""},
            }
            return [Piece(tool_calls=[call])]
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[Piece]:
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [Piece(content=str(delta["text"]))]
        if kind == "input_json_delta" and delta.get("partial_json"):
            partial = str(delta["partial_json"])
            if index in self.answer_blocks:
                return [Piece(content=partial)]
            if index in self.tools:
                return [Piece(tool_calls=[{"index": self.tools[index], "function": {"arguments": partial}}])]
        return []


def _event(data: str) -> _Event:
    try:
        return msgspec.json.decode(data, type=_Event)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise Failure("garbage", f"a stream event is not a Messages API event: {error}"[:300]) from None


class AnthropicProvider:
    def __init__(self, http: Http) -> None:
        self._http = http

    def _headers(self, target: Target) -> dict[str, str]:
        options = options_of(target.spec, AnthropicOptions)
        headers = {**options.headers, "anthropic-version": options.version}
        if target.api_key:
            headers["x-api-key"] = target.api_key
        return headers

    def _url(self, target: Target) -> str:
        base = target.endpoint.rstrip("/")
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    async def chat(self, target: Target, request: ChatRequest) -> Answer:
        body = msgspec.json.encode(messages_body(request, target))
        reply = await self._http.post(self._url(target), body, self._headers(target), seconds=target.timeout)
        if reply.status >= 400:
            raise status_failure(reply.status, reply.body, reply.headers)
        try:
            message = msgspec.json.decode(reply.body, type=_Message)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise Failure("garbage", f"the answer is not a Messages API message: {error}"[:300]) from None
        return answer_of(message)

    async def stream(self, target: Target, request: ChatRequest) -> AsyncIterator[Piece]:
        body = msgspec.json.encode({**messages_body(request, target), "stream": True})
        state = _StreamState()
        async with self._http.stream(self._url(target), body, self._headers(target), seconds=target.timeout) as answer:
            if answer.status >= 400:
                raise status_failure(answer.status, answer.error_body, answer.headers)
            async for line in answer.lines:
                if not line.startswith("data:"):
                    continue  # the event: lines repeat the data's type
                for piece in state.pieces(_event(line[5:].strip())):
                    yield piece
                if state.ended:
                    break
        if not state.ended:
            raise Failure("stream-cut", "the stream ended before message_stop")

    async def embed(self, target: Target, request: EmbeddingRequest) -> Embeddings:
        raise Failure("content", "the anthropic provider has no embeddings")
