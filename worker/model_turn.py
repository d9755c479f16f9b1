"""The built-in ``@model`` tool: one model turn of an agent, asked of the model gateway over the bus.

The task's input is ``{"agent": "name@version", "body": <chat completion request>}``; its output is the
assistant's message with why it ended, the model that answered and its usage in the shape tools report it
(``{"model", "usage": {"input_tokens", "output_tokens"}}``), so a run's tokens add up like any tool's.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from bus.messages import Task, TurnReply, TurnRequest, encode

Ask = Callable[[TurnRequest], Awaitable[TurnReply]]


class _Turn(msgspec.Struct, frozen=True):
    agent: str
    body: msgspec.Raw


class _Choice(msgspec.Struct, frozen=True):
    message: dict[str, Any]
    finish_reason: str | None = None


class _Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Completion(msgspec.Struct, frozen=True):
    choices: list[_Choice]
    model: str = ""
    usage: _Usage = _Usage()


class TurnFailed(Exception):
    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


async def run_turn(ask: Ask, task: Task, *, first: bool = False) -> bytes:
    """The output of the turn, as JSON; raises TurnFailed with the reason and whether a retry may succeed.
    ``first``: this is the first delivery of the task's first attempt (``TurnRequest.first``)."""
    try:
        turn = msgspec.json.decode(task.input, type=_Turn)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise TurnFailed(f"a model turn's input is malformed: {error}", retryable=False) from None
    request = TurnRequest(
        tenant=task.tenant,
        run_id=task.run_id,
        task_id=task.task_id,
        step=task.step,
        agent=turn.agent,
        body=turn.body,
        first=first,
    )
    reply = await ask(request)
    if not reply.ok:
        raise TurnFailed(reply.error or "the model gateway gave no completion", retryable=reply.retryable)
    try:
        completion = msgspec.json.decode(reply.completion, type=_Completion)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise TurnFailed(f"the gateway's completion is malformed: {error}", retryable=False) from None
    if not completion.choices:
        raise TurnFailed("the model answered no choice", retryable=True)
    choice = completion.choices[0]
    usage = {"input_tokens": completion.usage.prompt_tokens, "output_tokens": completion.usage.completion_tokens}
    output = {
        "message": choice.message,
        "finish_reason": choice.finish_reason,
        "model": completion.model,
        "usage": usage,
    }
    return encode(output)
