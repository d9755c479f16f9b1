"""Token counts for providers that report none (the mock, some local servers): an estimate, marked as such.

Four characters a token and OpenAI's overhead of a few tokens per message: close enough to route by and to
show; metering replaces it with tiktoken's counts where the encoding is known.
"""

import json
import math
from typing import Any

from control_plane.gateway.requests import ChatRequest, text_of

_PER_MESSAGE = 4
_PER_ANSWER = 3


def of_text(text: str) -> int:
    return math.ceil(len(text) / 4)


def prompt_tokens(request: ChatRequest) -> int:
    total = _PER_ANSWER
    for message in request.messages:
        total += _PER_MESSAGE + of_text(text_of(message.content))
        for call in message.tool_calls or []:
            total += of_text(call.function.name) + of_text(call.function.arguments)
    if request.tools:
        total += of_text(json.dumps([tool.function.name for tool in request.tools]))
    return total


def answer_tokens(message: dict[str, Any]) -> int:
    total = of_text(str(message.get("content") or ""))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        total += of_text(str(function.get("name", ""))) + of_text(str(function.get("arguments", "")))
    return max(total, 1)
