"""The requests the gateway takes, in OpenAI's shape: a chat completion and an embedding, checked once.

A malformed request is refused with the offending field named (``messages[2].role``). Parameters the
gateway does not interpret but OpenAI-compatible providers do (``top_p``, ``stop``, ``seed``, …) are
typed here and passed on; unknown ones are ignored, as clients add parameters faster than servers learn
them.
"""

from typing import Annotated, Any, Literal

import msgspec

from control_plane.errors import Invalid, field_from_msgspec

Role = Literal["system", "developer", "user", "assistant", "tool"]


class FunctionCall(msgspec.Struct, frozen=True):
    name: str
    arguments: str
    """A JSON document, as text (OpenAI's convention)."""


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionSpec(msgspec.Struct, frozen=True, omit_defaults=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(msgspec.Struct, frozen=True):
    """Sent on with its ``type`` always: OpenAI's API and llama.cpp's server refuse a tool without one."""

    function: FunctionSpec
    type: Literal["function"] = "function"


class ChatRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """``POST /v1/llm/chat/completions``: ``model`` is a tier (``tier2``) or a deployment's name."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=1)] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return text_of(message.content)
        return ""

    @property
    def answer_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class EmbeddingRequest(msgspec.Struct, frozen=True, omit_defaults=True):
    """``POST /v1/llm/embeddings``."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    input: (
        Annotated[str, msgspec.Meta(min_length=1)] | Annotated[list[str], msgspec.Meta(min_length=1, max_length=2048)]
    )
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=8192)] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    """``base64``: each vector as the base64 of its little-endian float32s (what OpenAI's clients ask for)."""
    user: str | None = None

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


def text_of(content: str | list[dict[str, Any]] | None) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return "".join(str(part.get("text", "")) for part in content if part.get("type") == "text")


def _parse(body: Any, kind: type[msgspec.Struct]) -> Any:
    if not isinstance(body, dict):
        raise Invalid("validation-error", "the request is a JSON object", None)
    try:
        return msgspec.convert(body, type=kind)
    except msgspec.ValidationError as error:
        detail, field = field_from_msgspec(str(error))
        raise Invalid("validation-error", detail, field) from None


def parse_chat(body: Any) -> ChatRequest:
    request: ChatRequest = _parse(body, ChatRequest)
    for index, message in enumerate(request.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise Invalid(
                "validation-error", "a tool message needs its tool_call_id", f"messages[{index}].tool_call_id"
            )
    if request.response_format is not None:
        kind = request.response_format.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            detail = f"unknown response_format type {kind!r}: use text, json_object or json_schema"
            raise Invalid("validation-error", detail, "response_format.type")
        if kind == "json_schema" and not isinstance(request.response_format.get("json_schema"), dict):
            raise Invalid("validation-error", "a json_schema response_format needs its json_schema", "response_format")
    return request


def parse_embedding(body: Any) -> EmbeddingRequest:
    request: EmbeddingRequest = _parse(body, EmbeddingRequest)
    return request


def schema_of(request: ChatRequest) -> dict[str, Any] | None:
    """The JSON Schema a ``json_schema`` response_format asks the answer to follow."""
    form = request.response_format or {}
    if form.get("type") != "json_schema":
        return None
    schema = form["json_schema"].get("schema")
    return schema if isinstance(schema, dict) else {}


def upstream_body(request: ChatRequest, remote_model: str) -> dict[str, Any]:
    """The request as an OpenAI-compatible provider takes it, for its own model name."""
    body: dict[str, Any] = msgspec.to_builtins(request)
    body["model"] = remote_model
    return body
