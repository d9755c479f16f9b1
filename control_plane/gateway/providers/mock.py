"""The ``mock`` provider: deterministic, in process, no network; scripted by its deployment's ``options``.

- ``turns``: a list of ``{content}`` or ``{tool_calls: [{name, arguments}]}``; the answer is ``turns[k]``,
  k being the number of assistant messages already in the request (past the end: the last one). Tool
  calls get the ids ``call_<k>_<i>``.
- ``answers``: ``{text: answer}``, keyed by the last user message's exact text.
- otherwise ``"mock: <last user message>"``; asked for a ``json_schema`` response format, a deterministic
  instance of the schema instead.
- faults on demand: the last user message holding ``[[fault:<kind>]]``, or ``options.fail`` naming one
  for every call; kinds ``429`` (with ``options.retry_after``), ``500``, ``timeout`` (no answer, ever: the
  attempt's timeout ends it), ``refused``, ``garbage``, ``context-length``. ``options.latency_ms`` delays
  every answer.
- usage: none reported, so the gateway counts tokens as for any such provider.
"""

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from typing import Any

from control_plane.gateway.documents import MockOptions, MockTurn, options_of
from control_plane.gateway.failures import Failure
from control_plane.gateway.providers.base import Answer, Embeddings, Piece, Target
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest, schema_of

_FAULT = re.compile(r"\[\[fault:([a-z0-9-]+)\]\]")


def _fault(options: MockOptions, text: str) -> str | None:
    marked = _FAULT.search(text)
    return marked.group(1) if marked else options.fail


async def _misbehave(options: MockOptions, text: str) -> None:
    """Wait ``latency_ms``, then fail as asked (if asked)."""
    if options.latency_ms:
        await asyncio.sleep(options.latency_ms / 1000)
    fault = _fault(options, text)
    if fault is None:
        return
    if fault == "429":
        raise Failure("rate-limited", "mock: rate limited", status=429, retry_after=options.retry_after)
    if fault == "500":
        raise Failure("server-error", "mock: internal error", status=500)
    if fault == "timeout":
        await asyncio.Event().wait()  # the attempt's timeout cancels this
    if fault == "refused":
        raise Failure("refused", "mock: connection refused")
    if fault == "garbage":
        raise Failure("garbage", "mock: the answer is not a chat completion")
    if fault == "context-length":
        raise Failure("context-length", "mock: the prompt exceeds the context window", status=400)


def schema_instance(schema: Any, root: Any = None) -> Any:
    """A deterministic value that a JSON Schema accepts (the common keywords: types, properties, items,
    enum and const, the first of anyOf/oneOf, allOf merged, local ``$ref``s, minimums and minimum lengths)."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return schema_instance(target, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0], root)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged = {**merged, **part, "properties": {**merged.get("properties", {}), **part.get("properties", {})}}
        return schema_instance(merged, root)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return {name: schema_instance(sub, root) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [schema_instance(schema.get("items", {}), root) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        value = low + (1 if "exclusiveMinimum" in schema else 0) if isinstance(low, int | float) else 0
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


def _turn(options: MockOptions, request: ChatRequest) -> MockTurn | None:
    if not options.turns:
        return None
    k = sum(1 for message in request.messages if message.role == "assistant")
    return options.turns[min(k, len(options.turns) - 1)]


def answer_of(options: MockOptions, request: ChatRequest) -> Answer:
    """What the script says to answer."""
    k = sum(1 for message in request.messages if message.role == "assistant")
    turn = _turn(options, request)
    if turn is not None and turn.tool_calls:
        calls = [
            {
                "id": f"call_{k}_{i}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments, separators=(",", ":"))},
            }
            for i, call in enumerate(turn.tool_calls)
        ]
        return Answer(
            message={"role": "assistant", "content": turn.content, "tool_calls": calls}, finish_reason="tool_calls"
        )
    if turn is not None:
        text = turn.content or ""
    elif request.last_user_text in options.answers:
        text = options.answers[request.last_user_text]
    elif (schema := schema_of(request)) is not None:
        text = json.dumps(schema_instance(schema), separators=(",", ":"))
    else:
        text = f"mock: {request.last_user_text}"
    return Answer(message={"role": "assistant", "content": text}, finish_reason="stop")


def vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector of ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


class MockProvider:
    async def chat(self, target: Target, request: ChatRequest) -> Answer:
        options = options_of(target.spec, MockOptions)
        await _misbehave(options, request.last_user_text)
        return answer_of(options, request)

    async def stream(self, target: Target, request: ChatRequest) -> AsyncIterator[Piece]:
        options = options_of(target.spec, MockOptions)
        await _misbehave(options, request.last_user_text)
        answer = answer_of(options, request)
        if answer.message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(answer.message["tool_calls"])]
            yield Piece(tool_calls=calls)
        else:
            words = str(answer.message.get("content") or "").split(" ")
            for i, word in enumerate(words):
                yield Piece(content=word if i == 0 else " " + word)
        yield Piece(finish_reason=answer.finish_reason)

    async def embed(self, target: Target, request: EmbeddingRequest) -> Embeddings:
        options = options_of(target.spec, MockOptions)
        await _misbehave(options, request.texts[-1])
        dimensions = request.dimensions or options.dimensions
        return Embeddings(vectors=[vector(text, dimensions) for text in request.texts])
