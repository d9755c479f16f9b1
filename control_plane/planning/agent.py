"""The agent loop: one more planner kind, deciding an agent's next move from the recorded step instances.

An agent's run is a sequence of model turns and the tool calls each turn asks for, every one a step
instance of the run: turn ``n`` is keyed ``turn-<n>`` and runs the built-in ``@model`` tool (a worker sends
the request through the model gateway), its ``i``-th tool call is keyed ``turn-<n>/call-<i>`` and runs that
tool in a sandbox like any step. ``decide`` rebuilds the conversation from the records every time — the
system message (the instructions rendered with the run's input), the input as the first user message, then
each turn's assistant message followed by its tool results — so a control plane that dies mid-loop
continues it from PostgreSQL, and a key once started is never started again: no finished model call or
tool call is repeated.

- A turn whose message has no tool calls is the final answer. With an output check (the output schema, or
  a plan step's plan validator), its content must be JSON the check accepts; on a mismatch the model gets
  one repair turn naming the problem, then the run fails with it.
- A tool call naming a tool the agent does not have, or arguments that are not JSON or fail the tool's
  input schema, is not run: the problem goes back to the model as that call's result. Three turns in a row
  whose calls were all invalid fail the run.
- The loop fails with ``max-turns`` when the last allowed turn still asks for tools, and when the turns'
  tokens pass the agent's ``max_tokens``. With ``answer_last_turn``, the last allowed turn's request says
  ``tool_choice: none``, asking the model for its final answer instead.
- **Sub-agents** (``agents``) are offered to the model as functions named for them, taking ``{"input": any}``.
  A call to one is an instance the control plane keeps (``RunAgent``, recording the sub-agent and its
  input) at ``turn-<n>/call-<i>``, and the sub-agent's own loop runs keyed under it
  (``turn-<n>/call-<i>/turn-<m>``..., at any depth, rebuilt from the records like the rest); when that loop
  ends the call is settled with its final answer, or with ``{"error": ...}`` when it failed (max-turns, say)
  — the caller's model gets the result either way, and carries on.
- **Handoffs** (``handoffs``) are offered as functions ``handoff_to_<name>``. A turn calling one ends the
  current agent's part (its other calls are not run): the agent handed to carries on with the transcript
  so far under its own instructions (the system message), tools, limits and output check, its turns
  numbered on (``turn-<n+1>``...), each turn's request naming the agent that answers it. The run's answer is
  the last agent's.
- A call of a tool in the agent's ``approval`` list waits first: the instance ``turn-<n>/approve-<i>``
  awaits the signal ``approve`` whose data names the call (``{"call": "turn-<n>/call-<i>", "approved":
  true|false, "note": "..."}``). Approved, the call runs; rejected, it does not, and the rejection (with
  the note) goes back to the model as the call's result.

Pure like the other planners: checkers of schemas come in as functions (the catalog builds them).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.states import MODEL_TOOL, RunState, TaskState
from control_plane.planning.model import (
    FINISHED,
    Action,
    AwaitSignal,
    Decision,
    RunAgent,
    RunOutcome,
    Settle,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
)
from control_plane.planning.model import failed as fail
from control_plane.planning.paths import Path, PathError, parse_path

TURN = "turn"
"""The element every turn is an instance of (its retry policy is the ``@model`` tool's)."""
APPROVE = "approve"
"""The element of every approval wait, and the signal that ends it."""
APPROVAL_DATA = {
    "type": "object",
    "properties": {"call": {"type": "string"}, "approved": {"type": "boolean"}, "note": {"type": "string"}},
    "required": ["call", "approved"],
}
"""What an ``approve`` signal carries (checked when it is sent)."""
INVALID_CALLS_LIMIT = 3
HANDOFF = "handoff_to_"
"""The prefix of the function that hands the conversation to an agent of ``handoffs``."""
SUB_AGENT_PARAMETERS = {"type": "object", "properties": {"input": {}}, "required": ["input"]}
"""A sub-agent's function: its input, any JSON, is the sub-agent's first user message."""
_NO_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}}
PLACEHOLDER = re.compile(r"\{\{\s*(.*?)\s*\}\}")
"""``{{$.input.x}}`` in instructions: a path, rendered as text (a string as it is, anything else as JSON)."""

Check = Callable[[Any], str | None]
"""The problem with a document (a schema's complaint, as one sentence), or None."""


@dataclass(frozen=True, slots=True)
class Instructions:
    """The instructions, split at their placeholders: text and paths in turn."""

    parts: tuple[str | Path, ...]

    def render(self, context: Mapping[str, Any]) -> str:
        return "".join(part if isinstance(part, str) else _text(part.evaluate(context)) for part in self.parts)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def compile_instructions(text: str, field: str = "instructions") -> Instructions:
    """The template's parts; a placeholder that is not a path raises WorkflowInvalid at ``field``."""
    parts: list[str | Path] = []
    at = 0
    for found in PLACEHOLDER.finditer(text):
        parts.append(text[at : found.start()])
        parts.append(parse_path(found.group(1), field))
        at = found.end()
    parts.append(text[at:])
    return Instructions(tuple(part for part in parts if part != ""))


@dataclass(frozen=True, slots=True)
class AgentTool:
    """A tool as the model sees it (a function) and as the run calls it (a pinned version on a queue)."""

    name: str
    version: str
    queue: str
    description: str
    parameters: Mapping[str, Any]
    check: Check | None = None

    def function(self) -> dict[str, Any]:
        return _function(self.name, self.description, self.parameters)


@dataclass(frozen=True, slots=True)
class AgentLoop:
    """One agent, ready to plan its runs (the ``Plan`` protocol)."""

    name: str
    version: str
    instructions: Instructions
    model: str
    tools: Mapping[str, AgentTool]
    model_queue: str
    max_turns: int
    answer_last_turn: bool = False
    """The last turn ``max_turns`` allows is asked for the final answer (``tool_choice: none``)."""
    max_tokens: int | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    check_output: Check | None = None
    description: str = ""
    agents: Mapping[str, AgentLoop] = field(default_factory=dict)
    """The agents it may call as tools, by name."""
    handoffs: Mapping[str, AgentLoop] = field(default_factory=dict)
    """The agents it may hand the conversation to, by name."""
    approval: frozenset[str] = frozenset()
    """The tools whose calls wait for a human's ``approve`` signal."""

    @property
    def kind(self) -> str:
        return "agent"

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def steps(self) -> Mapping[str, StepInfo]:
        found = {TURN: StepInfo(TURN, "model", ToolRef("model", MODEL_TOOL, None))}
        if self.approval:
            found[APPROVE] = StepInfo(APPROVE, "approval")
        for index, tool in enumerate(self.tools.values()):
            found[tool.name] = StepInfo(
                tool.name, f"tools[{index}]", ToolRef(f"tools[{index}]", tool.name, tool.version)
            )
        return found

    @property
    def signals(self) -> frozenset[str]:
        return frozenset({APPROVE}) if self.approval else frozenset()

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        agent = self
        try:
            system = agent.instructions.render({"input": run_input})
        except PathError as exc:
            return fail(f"instructions: {exc}")
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": _text(run_input)},
        ]
        settled: list[Settle] = []
        # Each agent's limits count its own turns, from the turn the conversation was handed to it.
        turns, tokens, invalid_turns, repaired = 0, 0, 0, False
        turn = 1
        while True:
            key = f"turn-{turn}"
            state = states.get(key)
            if state is None:
                if turns >= agent.max_turns:
                    return fail(f"max-turns: the agent still asked for tools after {agent.max_turns} turns")
                last = turns + 1 >= agent.max_turns
                return Decision((Start(key, TURN, agent._turn(messages, last)),), None, tuple(settled))
            if state.state not in FINISHED:
                return Decision((), None, tuple(settled))
            if state.state != TaskState.SUCCEEDED:
                return fail(f"turn {turn}: {state.error or state.state}")
            turns += 1
            answer = state.output if isinstance(state.output, dict) else {}
            message = answer.get("message") if isinstance(answer.get("message"), dict) else None
            if message is None:
                return fail(f"turn {turn}: the model's answer holds no message")
            tokens += _tokens(answer.get("usage"))
            if agent.max_tokens is not None and tokens > agent.max_tokens:
                return fail(f"max-tokens: the turns used {tokens} tokens, over the agent's {agent.max_tokens}")
            messages.append(_assistant(message))
            calls = message.get("tool_calls") or []
            if not calls:
                final, problem = agent._final(message.get("content"))
                if problem is None:
                    return Decision((), RunOutcome(RunState.SUCCEEDED, final, None), tuple(settled))
                if repaired:
                    return fail(f"final answer: {problem}")
                repaired = True
                messages.append({"role": "user", "content": _repair(problem)})
                turn += 1
                continue
            handed = agent._handoff(calls)
            if handed is not None:
                target, results = handed
                agent = agent.handoffs[target]
                try:
                    messages[0] = {"role": "system", "content": agent.instructions.render({"input": run_input})}
                except PathError as exc:
                    return fail(f"instructions of {target}: {exc}")
                messages.extend(results)
                turns, tokens, invalid_turns, repaired = 0, 0, 0, False
                turn += 1
                continue
            starts, waiting, results, all_invalid = agent._calls(key, calls, states, settled)
            if starts or waiting:
                return Decision(tuple(starts), None, tuple(settled))
            invalid_turns = invalid_turns + 1 if all_invalid else 0
            if invalid_turns >= INVALID_CALLS_LIMIT:
                return fail(f"{INVALID_CALLS_LIMIT} turns in a row asked only for invalid tool calls")
            messages.extend(results)
            turn += 1

    def _handoff(self, calls: list[Any]) -> tuple[str, list[dict[str, Any]]] | None:
        """The agent the first handoff call of a turn names, with every call's result; None: no handoff."""
        names = [_function_name(call) for call in calls]
        chosen = next(
            (i for i, name in enumerate(names) if name.startswith(HANDOFF) and name[len(HANDOFF) :] in self.handoffs),
            None,
        )
        if chosen is None:
            return None
        target = names[chosen][len(HANDOFF) :]
        not_run = {"error": f"not run: the conversation was handed to {target}"}
        results = [
            _tool_message(_call_id(call), {"handoff": target} if index == chosen else not_run)
            for index, call in enumerate(calls)
        ]
        return target, results

    def _turn(self, messages: list[dict[str, Any]], last: bool) -> ToolCall:
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        functions = [tool.function() for tool in self.tools.values()]
        functions += [_function(name, agent.description, SUB_AGENT_PARAMETERS) for name, agent in self.agents.items()]
        functions += [
            _function(f"{HANDOFF}{name}", f"Hand the conversation to {name}: {agent.description}", _NO_PARAMETERS)
            for name, agent in self.handoffs.items()
        ]
        if functions:
            body["tools"] = functions
            if last and self.answer_last_turn:
                body["tool_choice"] = "none"
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_output_tokens is not None:
            body["max_tokens"] = self.max_output_tokens
        if self.check_output is not None:
            body["response_format"] = {"type": "json_object"}
        return ToolCall(MODEL_TOOL, None, self.model_queue, {"agent": self.ref, "body": body})

    def _final(self, content: Any) -> tuple[Any, str | None]:
        """The final answer (parsed JSON when there is an output schema) and what is wrong with it."""
        if self.check_output is None:
            return content, None
        try:
            value = json.loads(content) if isinstance(content, str) else content
        except json.JSONDecodeError as exc:
            return None, f"the answer is not JSON ({exc.msg})"
        return value, self.check_output(value)

    def _calls(
        self, key: str, calls: list[Any], states: Mapping[str, StepState], settled: list[Settle]
    ) -> tuple[list[Start], bool, list[dict[str, Any]], bool]:
        """The calls of turn ``key``: those to start, whether any is running, the tool messages of the
        finished ones, and whether every call was invalid; sub-agent calls whose loops end now go to
        ``settled``."""
        starts: list[Start] = []
        waiting, all_invalid = False, True
        results: list[dict[str, Any]] = []
        for index, call in enumerate(calls):
            call_id, name, arguments, problem = self._call(call)
            if problem is not None:
                results.append(_tool_message(call_id, {"error": problem}))
                continue
            all_invalid = False
            call_key = f"{key}/call-{index}"
            if name in self.approval:
                verdict = self._approval(f"{key}/approve-{index}", call_key, name, arguments, states)
                if isinstance(verdict, Start):
                    starts.append(verdict)
                    continue
                if verdict is None:
                    waiting = True
                    continue
                if verdict is not True:
                    results.append(_tool_message(call_id, verdict))
                    continue
            state = states.get(call_key)
            if name in self.agents and (state is None or state.state not in FINISHED):
                state = self._sub_agent(call_key, name, arguments["input"], state, states, starts, settled)
            if state is None:
                tool = self.tools[name]
                starts.append(Start(call_key, tool.name, ToolCall(tool.name, tool.version, tool.queue, arguments)))
            elif state.state not in FINISHED:
                waiting = True
            elif state.state == TaskState.SUCCEEDED:
                results.append(_tool_message(call_id, state.output))
            else:
                results.append(_tool_message(call_id, {"error": state.error or str(state.state)}))
        return starts, waiting, results, all_invalid

    def _sub_agent(
        self,
        key: str,
        name: str,
        sub_input: Any,
        state: StepState | None,
        states: Mapping[str, StepState],
        starts: list[Start],
        settled: list[Settle],
    ) -> StepState:
        """A call to sub-agent ``name`` at ``key``, not finished before this decision: its loop's next move
        (with the call's own instance, when it begins) and the call's state after it."""
        agent = self.agents[name]
        decision = nested_decision(agent, key, name, sub_input, states)
        if decision.outcome is None:
            if state is None:
                starts.append(Start(key, name, RunAgent(agent.ref, sub_input)))
            starts.extend(decision.start)
            settled.extend(decision.settle)
            return StepState(TaskState.RUNNING, step=name)
        outcome = decision.outcome
        if state is None:
            # It ended before it began (its instructions cannot be rendered): never recorded, and the
            # same records end it the same way again.
            return StepState(TaskState.FAILED, None, outcome.error, name)
        settle = (
            Settle(key, TaskState.SUCCEEDED, outcome.output, None)
            if outcome.state == RunState.SUCCEEDED
            else Settle(key, TaskState.FAILED, None, outcome.error)
        )
        settled.extend((*decision.settle, settle))
        return StepState(settle.state, settle.output, settle.error, name)

    def _approval(
        self, key: str, call_key: str, tool: str, arguments: Any, states: Mapping[str, StepState]
    ) -> Start | bool | dict[str, Any] | None:
        """Of the call ``call_key``: the wait to start for its approval, None while it waits, True once
        approved, or the result the model gets instead of the call's (rejected, or the wait failed)."""
        state = states.get(key)
        if state is None:
            about = {"call": call_key, "tool": tool, "arguments": arguments}
            wait = AwaitSignal((APPROVE,), match={"call": call_key}, schema=APPROVAL_DATA, about=about)
            return Start(key, APPROVE, wait)
        if state.state not in FINISHED:
            return None
        if state.state != TaskState.SUCCEEDED:
            return {"error": f"not approved: {state.error or state.state}"}
        data = state.output.get("data") if isinstance(state.output, dict) else None
        data = data if isinstance(data, dict) else {}
        if data.get("approved") is True:
            return True
        rejected: dict[str, Any] = {"error": "rejected: a reviewer did not approve this call"}
        if isinstance(data.get("note"), str):
            rejected["note"] = data["note"]
        return rejected

    def _call(self, call: Any) -> tuple[str, str, Any, str | None]:
        """(id, tool or sub-agent name, arguments, problem) of one tool call the model asked for."""
        function = call.get("function") if isinstance(call, dict) else None
        call_id = _call_id(call)
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return call_id, "", None, "a tool call needs a function with a name"
        name = function["name"]
        tool = self.tools.get(name)
        if tool is None and name not in self.agents:
            offered = ", ".join([*self.tools, *self.agents]) or "none"
            return call_id, name, None, f"there is no tool {name!r} (the tools are: {offered})"
        raw = function.get("arguments") or "{}"
        try:
            arguments = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as exc:
            return call_id, name, None, f"the arguments of {name} are not JSON ({exc.msg})"
        if tool is None:
            if not isinstance(arguments, dict) or "input" not in arguments:
                return call_id, name, None, f'the arguments of {name} need its input, as {{"input": ...}}'
        elif tool.check is not None and (problem := tool.check(arguments)):
            return call_id, name, None, f"the arguments of {name} do not match its input schema: {problem}"
        return call_id, name, arguments, None


def nested_decision(
    loop: AgentLoop, key: str, element: str, loop_input: Any, states: Mapping[str, StepState]
) -> Decision:
    """The next move of an agent loop run under ``key``: its instances are keyed ``<key>/turn-<n>...`` and
    are instances of the elements ``<element>/turn``, ``<element>/<tool>``..."""
    prefix = f"{key}/"
    own = {k[len(prefix) :]: s for k, s in states.items() if k.startswith(prefix)}
    decision = loop.decide(loop_input, own)
    starts = tuple(Start(prefix + s.key, f"{element}/{s.step}", moved_under(s.action, prefix)) for s in decision.start)
    settled = tuple(Settle(prefix + s.key, s.state, s.output, s.error) for s in decision.settle)
    return Decision(starts, decision.outcome, settled)


def _function(name: str, description: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": dict(parameters)}}


def _function_name(call: Any) -> str:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else ""


def _call_id(call: Any) -> str:
    return str(call.get("id", "")) if isinstance(call, dict) else ""


def moved_under(action: Action, prefix: str) -> Action:
    """The action of a loop's instance keyed under ``prefix`` (the loop of an agent step in a workflow): an
    approval names its call by the run's key of it, which is what the signal that answers it names."""
    if isinstance(action, AwaitSignal) and action.match is not None and "call" in action.match:
        call = prefix + str(action.match["call"])
        about = None if action.about is None else {**action.about, "call": call}
        return dataclasses.replace(action, match={"call": call}, about=about)
    return action


def _assistant(message: Mapping[str, Any]) -> dict[str, Any]:
    kept = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        kept["tool_calls"] = message["tool_calls"]
    return kept


def _tool_message(call_id: str, content: Any) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": _text(content)}


def _repair(problem: str) -> str:
    return f"Your answer was not accepted: {problem}. Answer again with JSON only."


def _tokens(usage: Any) -> int:
    """A turn's tokens, as its output reports them (``{"input_tokens", "output_tokens"}``)."""
    if not isinstance(usage, dict):
        return 0
    return sum(value for key in ("input_tokens", "output_tokens") if isinstance(value := usage.get(key), int))


SUMMARY_CHARS = 1000


def turn_summary(output: Any) -> dict[str, Any]:
    """What a turn's event shows of its answer (the transcript has it whole): the tool calls asked for,
    the start of the text, why it ended, the model and the tokens."""
    said = output if isinstance(output, dict) else {}
    found = said.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    calls = [call.get("function") or {} for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    content = message.get("content")
    return {
        "tool_calls": [{"tool": call.get("name"), "arguments": call.get("arguments")} for call in calls],
        "content": content[:SUMMARY_CHARS] if isinstance(content, str) else content,
        "finish_reason": said.get("finish_reason"),
        "model": said.get("model"),
        "usage": said.get("usage"),
    }
