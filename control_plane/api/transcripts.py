"""An agent run's transcript (``GET /v1/runs/{id}/transcript``; of an agent step of a workflow's run with
``?step=NAME``), read back from what the run recorded: its
turn tasks (the request each sent, the model's answer), the tasks of the calls and approvals each turn
asked for, and the gateway's record of every model call (tokens and cost, failed attempts included).

Each turn shows only what is new in it: the messages it added to the conversation (for the first, the
system and user messages; then the tool results and repair prompts that followed the previous answer),
the answer, and each tool call with the result the model was given for it.
"""

import itertools
import re
from typing import Any

import msgspec

from registry.llm_calls import StoredCall
from registry.run_reads import TaskRow
from registry.runs import RunRow

_TURN = re.compile(r"turn-(\d+)")
_CALL = re.compile(r"turn-(\d+)/(call|approve)-(\d+)")


def _json(text: str | None) -> Any:
    return None if text is None else msgspec.json.decode(text)


def _arguments(raw: Any) -> Any:
    """A tool call's arguments as the model wrote them: parsed when they are JSON."""
    if not isinstance(raw, str):
        return raw
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


def transcript(
    run: RunRow, tasks: list[TaskRow], calls: list[StoredCall], step: TaskRow | None = None
) -> dict[str, Any]:
    """The transcript of the run's agent, or of its agent step ``step`` (the ``@agent`` instance of a
    workflow's step, whose loop's instances are keyed under it)."""
    prefix = "" if step is None else f"{step.step}/"
    turns: dict[int, TaskRow] = {}
    parts: dict[tuple[int, str, int], TaskRow] = {}
    for row in tasks:
        if not row.step.startswith(prefix):
            continue
        key = row.step[len(prefix) :]
        if (turn := _TURN.fullmatch(key)) is not None:
            turns[int(turn.group(1))] = row
        elif (part := _CALL.fullmatch(key)) is not None:
            parts[(int(part.group(1)), part.group(2), int(part.group(3)))] = row
    by_task: dict[str, list[StoredCall]] = {}
    for call in calls:
        by_task.setdefault(call.task_id or "", []).append(call)
    shown: list[dict[str, Any]] = []
    seen = 0
    """How many messages of the conversation the turns shown so far account for."""
    for number in sorted(turns):
        row = turns[number]
        request = _json(row.input) or {}
        messages = list((request.get("body") or {}).get("messages") or [])
        shown.append(_turn(number, row, messages[seen:], _json(row.output), parts, by_task.get(row.id, [])))
        seen = len(messages) + 1  # and the answer
    for earlier, later in itertools.pairwise(shown):
        results = [m.get("content") for m in later["messages"] if m.get("role") == "tool"]
        for call, result in zip(earlier["tool_calls"], results, strict=False):
            call["result"] = _arguments(result)
    total = {key: sum(turn["usage"][key] for turn in shown) for key in ("input_tokens", "output_tokens", "cost_usd")}
    agent: Any
    state: str
    if step is None:
        agent, state, output, error = f"{run.target_name}@{run.target_version}", run.state, run.output, run.error
    else:
        agent = (_json(step.input) or {}).get("agent")
        state, output, error = step.state, step.output, step.error
    return {
        "run_id": run.id,
        "step": None if step is None else step.step,
        "agent": agent,
        "state": state,
        "output": _json(output),
        "error": error,
        "turns": shown,
        "usage": {**total, "turns": len(shown), "model_calls": sum(turn["model_calls"] for turn in shown)},
    }


def _turn(
    number: int,
    row: TaskRow,
    messages: list[Any],
    output: Any,
    parts: dict[tuple[int, str, int], TaskRow],
    calls: list[StoredCall],
) -> dict[str, Any]:
    said = output if isinstance(output, dict) else {}
    answer = said.get("message") if isinstance(said.get("message"), dict) else None
    asked = (answer or {}).get("tool_calls") or []
    reported = said.get("usage") or {}
    answered = next((call for call in calls if call.outcome == "ok"), None)
    usage = {
        "input_tokens": sum(c.input_tokens for c in calls) if calls else reported.get("input_tokens", 0),
        "output_tokens": sum(c.output_tokens for c in calls) if calls else reported.get("output_tokens", 0),
        "cost_usd": sum(c.cost_usd for c in calls),
    }
    return {
        "turn": number,
        "step": row.step,
        "state": row.state,
        "error": row.error,
        "model": answered.deployment if answered is not None else said.get("model"),
        "latency_ms": answered.latency_ms if answered is not None else None,
        "messages": messages,
        "answer": answer,
        "tool_calls": [_tool_call(number, index, call, parts) for index, call in enumerate(asked)],
        "usage": usage,
        "model_calls": len(calls),
    }


def _tool_call(number: int, index: int, call: Any, parts: dict[tuple[int, str, int], TaskRow]) -> dict[str, Any]:
    function = (call.get("function") if isinstance(call, dict) else None) or {}
    ran, approval = parts.get((number, "call", index)), parts.get((number, "approve", index))
    shown: dict[str, Any] = {
        "id": call.get("id") if isinstance(call, dict) else None,
        "tool": function.get("name"),
        "arguments": _arguments(function.get("arguments")),
        "step": ran.step if ran is not None else None,
        "state": ran.state if ran is not None else "not run",
        # What the model is given for it, once the next turn is asked (set by ``transcript``); until then
        # the call's own output or error.
        "result": None if ran is None else _json(ran.output) if ran.error is None else {"error": ran.error},
    }
    if approval is not None:
        decided = _json(approval.output) or {}
        shown["approval"] = {"step": approval.step, "state": approval.state, "decision": decided.get("data")}
    return shown
