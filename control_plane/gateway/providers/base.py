"""What every provider module implements: one deployment's chat completion (whole or streamed) and
embeddings, over its own protocol, answered in the gateway's types.

A provider raises ``control_plane.gateway.failures.Failure`` for anything that went wrong, never a
transport library's exception, and never puts a credential into one.
"""

from collections.abc import AsyncIterator
from typing import Any, Protocol

import msgspec

from control_plane.gateway.documents import ModelSpec
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """One deployment as an attempt reaches it: its document, where it answers and the key it needs."""

    spec: ModelSpec
    endpoint: str
    api_key: str | None = None
    timeout: float
    """Seconds the attempt may take to answer (a stream: to its first piece, then between pieces)."""


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    """An estimate of the gateway's: the provider reported none and tiktoken knows no encoding of the model
    (``control_plane.gateway.tokens``)."""

    def document(self) -> dict[str, int]:
        """As OpenAI's ``usage``."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """A whole chat completion: the assistant's message (OpenAI's shape) and why it ended."""

    message: dict[str, Any]
    finish_reason: str
    usage: Usage | None = None


class Piece(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One piece of a streamed completion: a delta in OpenAI's shape, or the end with its reason, or usage."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    """Deltas of tool calls: ``{index, id?, type?, function: {name?, arguments?}}``."""
    finish_reason: str | None = None
    usage: Usage | None = None


class Embeddings(msgspec.Struct, frozen=True, kw_only=True):
    vectors: list[list[float]]
    usage: Usage | None = None


class Provider(Protocol):
    async def chat(self, target: Target, request: ChatRequest) -> Answer: ...

    def stream(self, target: Target, request: ChatRequest) -> AsyncIterator[Piece]: ...

    async def embed(self, target: Target, request: EmbeddingRequest) -> Embeddings: ...
