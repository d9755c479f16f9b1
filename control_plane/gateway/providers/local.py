"""The ``local`` provider: the ``openai`` provider at ``AF_LOCAL_MODEL_URL`` (llama.cpp's server), asking for
tool calls through a JSON schema when the deployment's ``tools`` option is ``schema`` (its default).

llama.cpp's server offers tools only to a model whose chat template takes them; SmolLM2's does not, and the
server then drops ``tools`` without a word: the model answers in prose. What it honours for every model is
``response_format: json_schema``, a grammar the sampler cannot leave. So a request with tools goes to it as:

- the tools described at the end of the system message, with the reply's two forms: ``{"tool": NAME,
  "arguments": {...}}`` calls a tool, ``{"answer": ...}`` is the final answer;
- a schema of one branch per tool (its name as a constant, its input schema as ``arguments``) and one for
  the answer (``answer`` holding the request's own ``response_format`` schema, an object for
  ``json_object``, else text), keeping the branches ``tool_choice`` allows: ``none`` the answer alone,
  ``required`` the tools, a function named that one;
- the conversation so far in the same terms: an assistant's tool calls as the JSON replies they were, a
  tool's result as a user message naming the tool (the template has no tool role).

The reply is read back in OpenAI's shape: one tool call (``finish_reason: tool_calls``), or the answer as
the content. A reply cut at the token limit before its JSON ended is the request's problem (``content``):
the same request would be cut again. Streamed, such a call arrives whole, as one piece: its reply is only
known to be a call or an answer once it ended.
"""

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import msgspec

from control_plane.gateway.documents import LocalOptions, options_of
from control_plane.gateway.failures import Failure
from control_plane.gateway.providers.base import Answer, Embeddings, Piece, Target
from control_plane.gateway.providers.openai import OpenAIProvider
from control_plane.gateway.providers.transport import Http
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest, Message, schema_of, text_of

REPLY = 'Reply with JSON only: {"tool": NAME, "arguments": {...}} calls a tool; {"answer": ...} is your final answer.'


class LocalProvider:
    def __init__(self, http: Http) -> None:
        self._openai = OpenAIProvider(http, LocalOptions)

    def _constrained(self, target: Target, request: ChatRequest) -> bool:
        return bool(request.tools) and options_of(target.spec, LocalOptions).tools == "schema"

    async def chat(self, target: Target, request: ChatRequest) -> Answer:
        if not self._constrained(target, request):
            return await self._openai.chat(target, request)
        replied = await self._openai.chat(target, constrained(request))
        return read_reply(replied)

    async def stream(self, target: Target, request: ChatRequest) -> AsyncIterator[Piece]:
        if not self._constrained(target, request):
            async for piece in self._openai.stream(target, request):
                yield piece
            return
        answer = await self.chat(target, request)
        calls = answer.message.get("tool_calls") or []
        yield Piece(
            content=answer.message.get("content"),
            tool_calls=[{"index": index, **call} for index, call in enumerate(calls)] or None,
            finish_reason=answer.finish_reason,
        )
        if answer.usage is not None:
            yield Piece(usage=answer.usage)

    async def embed(self, target: Target, request: EmbeddingRequest) -> Embeddings:
        return await self._openai.embed(target, request)


def _answer_schema(request: ChatRequest) -> dict[str, Any]:
    form = (request.response_format or {}).get("type")
    if form == "json_schema":
        return schema_of(request) or {}
    return {"type": "object"} if form == "json_object" else {"type": "string"}


def reply_schema(request: ChatRequest) -> dict[str, Any]:
    """The replies ``request`` allows: a call of each tool its ``tool_choice`` leaves, or the answer."""
    choice = request.tool_choice
    named = str((choice.get("function") or {}).get("name", "")) if isinstance(choice, dict) else None
    branches: list[dict[str, Any]] = []
    if choice != "none":
        for tool in request.tools or []:
            function = tool.function
            if named is not None and function.name != named:
                continue
            parameters = function.parameters or {"type": "object"}
            branches.append(_object({"tool": {"const": function.name}, "arguments": parameters}))
    if choice != "required" and named is None:
        branches.append(_object({"answer": _answer_schema(request)}))
    if not branches:
        raise Failure("content", f"tool_choice names {named!r}, which is not one of the request's tools")
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _described(request: ChatRequest) -> str:
    lines = ["You may call these tools:"]
    for tool in request.tools or []:
        function = tool.function
        lines.append(f"{_signature(function.name, function.parameters or {})}: {function.description or ''}")
    lines.append(REPLY)
    return "\n".join(lines)


def _signature(name: str, parameters: Mapping[str, Any]) -> str:
    """``lookup(query: string, limit?: integer)``: a small model reads a signature better than a schema (given
    the schema as JSON, SmolLM2 copied pieces of it into its arguments); the grammar holds the rest."""
    properties = parameters.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    required = parameters.get("required") or []
    shown = []
    for key, schema in properties.items():
        kind = schema.get("type", "any") if isinstance(schema, Mapping) else "any"
        shown.append(f"{key}{'' if key in required else '?'}: {kind if isinstance(kind, str) else '|'.join(kind)}")
    return f"{name}({', '.join(shown)})"


def constrained(request: ChatRequest) -> ChatRequest:
    """``request`` as the server takes it: tools in the system message, the reply held to ``reply_schema``,
    the conversation's calls and results in the reply's terms."""
    names: dict[str, str] = {}
    """Each tool call's function, by its id (a tool message names only the id)."""
    messages: list[Message] = []
    for message in request.messages:
        if message.role == "assistant" and message.tool_calls:
            replies = []
            for call in message.tool_calls:
                names[call.id] = call.function.name
                replies.append(json.dumps({"tool": call.function.name, "arguments": _arguments(call.function)}))
            messages.append(Message(role="assistant", content="\n".join(replies)))
        elif message.role == "tool":
            tool = names.get(message.tool_call_id or "", "the tool")
            messages.append(Message(role="user", content=f"{tool} answered: {text_of(message.content)}"))
        else:
            messages.append(message)
    described = _described(request)
    system = next((i for i, m in enumerate(messages) if m.role in ("system", "developer")), None)
    if system is None:
        messages.insert(0, Message(role="system", content=described))
    else:
        first = messages[system]
        messages[system] = Message(role=first.role, content=f"{text_of(first.content)}\n\n{described}")
    schema = {"name": "reply", "schema": reply_schema(request)}
    return msgspec.structs.replace(
        request,
        messages=messages,
        tools=None,
        tool_choice=None,
        parallel_tool_calls=None,
        response_format={"type": "json_schema", "json_schema": schema},
    )


def _arguments(function: Any) -> Any:
    try:
        return json.loads(function.arguments)
    except json.JSONDecodeError:
        return function.arguments


def read_reply(replied: Answer) -> Answer:
    """The server's reply to a ``constrained`` request, in OpenAI's shape."""
    content = replied.message.get("content")
    try:
        reply = json.loads(content) if isinstance(content, str) else None
    except json.JSONDecodeError:
        reply = None
    if not isinstance(reply, Mapping) or not ({"tool", "answer"} & reply.keys()):
        if replied.finish_reason == "length":
            raise Failure("content", "the model's reply was cut at its token limit before its JSON ended")
        raise Failure("garbage", f"the reply is not a tool call or an answer: {str(content)[:200]}")
    if "tool" in reply:
        call = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": str(reply["tool"]), "arguments": json.dumps(reply.get("arguments", {}))},
        }
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return Answer(message=message, finish_reason="tool_calls", usage=replied.usage)
    answer = reply["answer"]
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return Answer(message={"role": "assistant", "content": text}, finish_reason="stop", usage=replied.usage)
