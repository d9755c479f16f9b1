"""Building workflows and agents in Python: the same documents their files hold, for `apply_workflow` and
`apply_agent`.

One builder per kind, each with `to_dict()` returning the document exactly as a file would hold it:

- `Workflow` (dag): chained `.step(...)` and `.loop(...)` calls; a loop's steps are a `Steps`.
- `StateMachine` (fsm): chained `.call`, `.wait`, `.sleep`, `.final` and `.failed` states, whose
  transitions are made by `go`, `on_signal` and `on_timeout`.
- `BehaviorTree` (bt): a root node made by the node functions `sequence`, `selector`, `parallel`, `retry`,
  `timeout`, `invert`, `repeat_until`, `call`, `condition` and `wait_signal`.
- `Agent`: a model with instructions, tools and limits.

A keyword argument left at its default leaves its key out of the document, so the server's default applies.
The builders refuse what only they can tell (a name used twice) with a ValueError; everything else is
checked by the server when the workflow is applied, with every problem and its exact field.

>>> from agentflow.builder import go
>>> doc = StateMachine("ping", "1", initial="call").call("call", "http-get@1", transitions=[go("done")])
>>> doc.final("done", output="$.steps.call.output").to_dict()["states"]["done"]
{'final': True, 'output': '$.steps.call.output'}
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self, TypeAlias

Node: TypeAlias = dict[str, Any]
"""A behavior-tree node, as the document holds it."""

Transition: TypeAlias = dict[str, Any]
"""A state machine transition, as the document holds it."""

RetryPolicy: TypeAlias = Mapping[str, Any]
"""A retry policy overriding the tool's: `max_attempts`, `backoff_seconds`, `multiplier`,
`max_backoff_seconds`, `jitter`, `retry_on` (the server checks it)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call that stands in for a failed step (`fallback`) or undoes a step when the run fails
    (`compensate`). Where a builder takes one, the tool alone (`"undo@1"`) will do too.

    tool: `name@version`, or `name` for the latest version, pinned when the workflow is applied.
    input: the input template; by default a fallback's is its step's input, a compensation's `$.input`.
    queue: the queue it runs on; `default` by default.
    """

    tool: str
    input: Any = None
    queue: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The `{tool, input, queue}` mapping of the document."""
        call: dict[str, Any] = {"tool": self.tool}
        if self.input is not None:
            call["input"] = self.input
        if self.queue is not None:
            call["queue"] = self.queue
        return call


def _put(mapping: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` unless `value` is None (left out, so the default applies)."""
    if value is not None:
        mapping[key] = value


def _tool_call(value: ToolCall | str | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return (ToolCall(value) if isinstance(value, str) else value).to_dict()


def _retry(value: RetryPolicy | None) -> dict[str, Any] | None:
    return None if value is None else dict(value)


# --- dag ---------------------------------------------------------------------------------------------


class _StepList:
    """DAG steps under construction, by name; `owner` says whose they are in errors."""

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._steps: dict[str, dict[str, Any]] = {}

    def step(
        self,
        name: str,
        tool: str,
        *,
        input: Any = None,
        needs: Iterable[str] = (),
        queue: str | None = None,
        when: str | None = None,
        continue_on_failure: bool = False,
        fallback: ToolCall | str | None = None,
        retry: RetryPolicy | None = None,
        compensate: ToolCall | str | None = None,
    ) -> Self:
        """Add a step running `tool` (`name@version`) after the steps it `needs`, only `when` the condition
        holds (skipped otherwise); returns the builder so that steps chain.

        continue_on_failure: a failure of the step does not fail the run; its output reads as null.
        fallback: what runs when the step failed or is dead; its output stands in for the step's.
        retry: the step's own retry policy. compensate: what undoes the step when the run fails later.
        """
        step: dict[str, Any] = {"name": name, "tool": tool}
        _put(step, "input", input)
        if needs := list(needs):
            step["needs"] = needs
        _put(step, "queue", queue)
        _put(step, "when", when)
        if continue_on_failure:
            step["continue_on_failure"] = True
        _put(step, "fallback", _tool_call(fallback))
        _put(step, "retry", _retry(retry))
        _put(step, "compensate", _tool_call(compensate))
        self._add(name, step)
        return self

    def _names(self) -> Iterator[str]:
        return iter(self._steps)

    def _add(self, name: str, step: dict[str, Any], *inner: str) -> None:
        """Add `step`, refusing its name or any of its `inner` names (a loop's steps) when already taken."""
        taken = set(self._names())
        for new in (name, *inner):
            if new in taken:
                raise ValueError(f"{self._owner}: a step named {new!r} already exists")
            taken.add(new)
        self._steps[name] = step

    def _copies(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(step) for step in self._steps.values()]


class Steps(_StepList):
    """The steps of a loop, built with the same `.step(...)` as a workflow's (loops do not nest).

    >>> Steps().step("revise", "editor@1").step("score", "scorer@1", needs=["revise"]).names()
    ['revise', 'score']
    """

    def __init__(self) -> None:
        super().__init__("loop steps")

    def names(self) -> list[str]:
        """The names of the steps so far, in order."""
        return list(self._steps)

    def to_list(self) -> list[dict[str, Any]]:
        """The steps, as the document's `loop.steps` holds them."""
        return self._copies()


class Workflow(_StepList):
    """A DAG workflow under construction. Step names are unique in the workflow, loops' steps included.

    >>> wf = Workflow("triage", "1.0.0").step("fetch", "http-get@1.0.0", input={"url": "$.input.url"})
    >>> wf.step("summarize", "llm@2", needs=["fetch"]).to_dict()["steps"][1]["needs"]
    ['fetch']
    """

    def __init__(
        self,
        name: str,
        version: str,
        *,
        output: Any = None,
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"workflow {name}")
        self.name = name
        self.version = version
        self.output = output
        self.description = description
        self.input_schema = input_schema
        self._inner: dict[str, list[str]] = {}

    def loop(
        self,
        name: str,
        steps: Steps,
        until: str,
        max_iterations: int,
        *,
        needs: Iterable[str] = (),
        when: str | None = None,
        continue_on_failure: bool = False,
        fallback: ToolCall | str | None = None,
    ) -> Workflow:
        """Add a bounded loop: `steps` run again and again, until the condition `until` holds on their
        outputs, at most `max_iterations` times. Inside, `$.steps.NAME.output` reads the previous iteration's
        outputs; outside, it reads the last one's as `{step: output, ...}`."""
        step: dict[str, Any] = {"name": name}
        if needs := list(needs):
            step["needs"] = needs
        _put(step, "when", when)
        step["loop"] = {"steps": steps.to_list(), "until": until, "max_iterations": max_iterations}
        if continue_on_failure:
            step["continue_on_failure"] = True
        _put(step, "fallback", _tool_call(fallback))
        self._add(name, step, *steps.names())
        self._inner[name] = steps.names()
        return self

    def _names(self) -> Iterator[str]:
        for name in self._steps:
            yield name
            yield from self._inner.get(name, ())

    def to_dict(self) -> dict[str, Any]:
        """The workflow document, as a file would hold it."""
        document: dict[str, Any] = {"name": self.name, "version": self.version, "kind": "dag"}
        _put(document, "description", self.description)
        _put(document, "input_schema", copy.deepcopy(self.input_schema))
        document["steps"] = self._copies()
        _put(document, "output", copy.deepcopy(self.output))
        return document


# --- fsm ---------------------------------------------------------------------------------------------


def go(to: str, *, when: str | None = None) -> Transition:
    """A transition to state `to`, taken `when` the condition holds; without one, always taken (so it
    belongs last: transitions are tried in order)."""
    return {"when": when, "to": to} if when is not None else {"to": to}


def on_signal(signal: str, to: str) -> Transition:
    """A wait state's transition to state `to` once `signal` arrived."""
    return {"signal": signal, "to": to}


def on_timeout(to: str) -> Transition:
    """A wait state's transition to state `to` when no signal arrived in time."""
    return {"timeout": True, "to": to}


class StateMachine:
    """An FSM workflow under construction: a run walks from the `initial` state along transitions to a
    final state, making at most `max_steps` visits of states that are not final (100 by default).

    >>> sm = StateMachine("approval", "1", initial="ask").wait(
    ...     "ask", ["approve"], timeout_seconds=60, transitions=[on_signal("approve", "ok"), on_timeout("no")]
    ... )
    >>> sm.final("ok").failed("no", "nobody answered").to_dict()["states"]["no"]
    {'final': True, 'status': 'failed', 'error': 'nobody answered'}
    """

    def __init__(
        self,
        name: str,
        version: str,
        *,
        initial: str,
        max_steps: int | None = None,
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.initial = initial
        self.max_steps = max_steps
        self.description = description
        self.input_schema = input_schema
        self._states: dict[str, dict[str, Any]] = {}

    def call(
        self,
        state: str,
        tool: str,
        *,
        input: Any = None,
        queue: str | None = None,
        transitions: Iterable[Transition] = (),
        on_failure: str | None = None,
        retry: RetryPolicy | None = None,
        compensate: ToolCall | str | None = None,
    ) -> StateMachine:
        """Add an action state calling `tool`; after it succeeds the first matching transition is taken,
        after it fails the state `on_failure` (without one the run fails)."""
        spec: dict[str, Any] = {"tool": tool}
        _put(spec, "input", input)
        _put(spec, "queue", queue)
        _put(spec, "retry", _retry(retry))
        _put(spec, "compensate", _tool_call(compensate))
        return self._add(state, spec, transitions, on_failure)

    def wait(
        self,
        state: str,
        signals: Iterable[str],
        *,
        timeout_seconds: float | None = None,
        transitions: Iterable[Transition] = (),
        on_failure: str | None = None,
    ) -> StateMachine:
        """Add a wait state: it waits for one of `signals` (`on_signal` transitions), for at most
        `timeout_seconds` (an `on_timeout` transition, else `on_failure`)."""
        wait: dict[str, Any] = {"signals": list(signals)}
        _put(wait, "timeout_seconds", timeout_seconds)
        return self._add(state, {"wait": wait}, transitions, on_failure)

    def sleep(
        self, state: str, seconds: float, *, transitions: Iterable[Transition] = (), on_failure: str | None = None
    ) -> StateMachine:
        """Add a state that sleeps `seconds`, then takes the first matching transition."""
        return self._add(state, {"sleep_seconds": seconds}, transitions, on_failure)

    def final(self, state: str, *, output: Any = None) -> StateMachine:
        """Add a final state: the run succeeds with `output` (a template) rendered."""
        spec: dict[str, Any] = {"final": True}
        _put(spec, "output", output)
        return self._add(state, spec)

    def failed(self, state: str, error: str | None = None) -> StateMachine:
        """Add a final state that fails the run with `error` (by default: the run ended in this state)."""
        spec: dict[str, Any] = {"final": True, "status": "failed"}
        _put(spec, "error", error)
        return self._add(state, spec)

    def _add(
        self, state: str, spec: dict[str, Any], transitions: Iterable[Transition] = (), on_failure: str | None = None
    ) -> StateMachine:
        if state in self._states:
            raise ValueError(f"state machine {self.name}: a state named {state!r} already exists")
        if moves := [dict(transition) for transition in transitions]:
            spec["transitions"] = moves
        _put(spec, "on_failure", on_failure)
        self._states[state] = spec
        return self

    def to_dict(self) -> dict[str, Any]:
        """The workflow document, as a file would hold it."""
        document: dict[str, Any] = {"name": self.name, "version": self.version, "kind": "fsm"}
        _put(document, "description", self.description)
        _put(document, "input_schema", copy.deepcopy(self.input_schema))
        document["initial"] = self.initial
        _put(document, "max_steps", self.max_steps)
        document["states"] = copy.deepcopy(self._states)
        return document


# --- bt ----------------------------------------------------------------------------------------------


def sequence(*children: Node) -> Node:
    """Each child in turn; fails at the first that fails."""
    return {"sequence": list(children)}


def selector(*children: Node) -> Node:
    """Each child in turn until one succeeds; fails if none does."""
    return {"selector": list(children)}


def parallel(*children: Node, success_threshold: int | None = None) -> Node:
    """Every child at once; succeeds once `success_threshold` of them succeeded (by default all)."""
    spec: dict[str, Any] = {"children": list(children)}
    _put(spec, "success_threshold", success_threshold)
    return {"parallel": spec}


def retry(child: Node, times: int) -> Node:
    """The child again after it fails, up to `times` attempts in all."""
    return {"retry": {"times": times, "child": child}}


def timeout(child: Node, seconds: float) -> Node:
    """Fails if the child has not finished within `seconds`."""
    return {"timeout": {"seconds": seconds, "child": child}}


def invert(child: Node) -> Node:
    """Succeeds when the child fails, and the other way round."""
    return {"invert": child}


def repeat_until(child: Node, condition: str, max: int) -> Node:
    """The child, round after round, until `condition` holds after one; fails after `max` rounds."""
    return {"repeat_until": {"condition": condition, "max": max, "child": child}}


def call(
    name: str,
    tool: str,
    *,
    input: Any = None,
    queue: str | None = None,
    retry: RetryPolicy | None = None,
    compensate: ToolCall | str | None = None,
) -> Node:
    """A leaf calling `tool`, its output read as `$.steps.NAME.output`."""
    leaf: Node = {"name": name, "tool": tool}
    _put(leaf, "input", input)
    _put(leaf, "queue", queue)
    _put(leaf, "retry", _retry(retry))
    _put(leaf, "compensate", _tool_call(compensate))
    return leaf


def condition(expr: str) -> Node:
    """A leaf that succeeds if the condition holds (no step runs)."""
    return {"condition": expr}


def wait_signal(name: str, signals: Iterable[str], *, timeout_seconds: float | None = None) -> Node:
    """A leaf that waits for one of `signals` (its data read as `$.steps.NAME.output`); fails on timing out."""
    spec: dict[str, Any] = {"name": name, "signals": list(signals)}
    _put(spec, "timeout_seconds", timeout_seconds)
    return {"wait_signal": spec}


def _leaf_names(node: Node) -> Iterator[str]:
    """The names of the tool and wait_signal leaves under `node`, depth first."""
    if "tool" in node:
        if isinstance(name := node.get("name"), str):
            yield name
        return
    for kind, value in node.items():
        if kind in ("sequence", "selector"):
            children = value
        elif kind == "parallel":
            children = value["children"]
        elif kind in ("retry", "timeout", "repeat_until"):
            children = [value["child"]]
        elif kind == "invert":
            children = [value]
        elif kind == "wait_signal":
            if isinstance(name := value.get("name"), str):
                yield name
            children = []
        else:
            children = []
        for child in children:
            yield from _leaf_names(child)


class BehaviorTree:
    """A behavior-tree workflow: a run ticks `root` until it succeeds or fails, then renders `output` (by
    default `{leaf: its output, ...}`). The names of tool and wait_signal leaves are unique in the tree.

    >>> tree = BehaviorTree("fetch", "1", selector(call("a", "http-get@1"), call("b", "http-get@2")))
    >>> tree.to_dict()["root"]["selector"][1]
    {'name': 'b', 'tool': 'http-get@2'}
    """

    def __init__(
        self,
        name: str,
        version: str,
        root: Node,
        *,
        output: Any = None,
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> None:
        seen: set[str] = set()
        for leaf in _leaf_names(root):
            if leaf in seen:
                raise ValueError(f"behavior tree {name}: more than one leaf is named {leaf!r}")
            seen.add(leaf)
        self.name = name
        self.version = version
        self.root = root
        self.output = output
        self.description = description
        self.input_schema = input_schema

    def to_dict(self) -> dict[str, Any]:
        """The workflow document, as a file would hold it."""
        document: dict[str, Any] = {"name": self.name, "version": self.version, "kind": "bt"}
        _put(document, "description", self.description)
        _put(document, "input_schema", copy.deepcopy(self.input_schema))
        document["root"] = copy.deepcopy(self.root)
        _put(document, "output", copy.deepcopy(self.output))
        return document


# --- agents ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """An agent document, for `apply_agent`: a model with instructions and the tools it may call.

    name, version: as for tools and workflows; versions are immutable.
    instructions: the system prompt; `{{$.input.topic}}` reads the step's input with the path language.
    model: a tier (`tier1` … `tier4`) or a model deployment's name.
    tools: `name[@version]` of the tools it may call (pinned when applied); agents: agents it may call as
    tools; handoffs: agents it may hand the conversation to; approval: tools whose calls wait for a human.
    max_turns, max_tokens, wall_seconds: the step's limits (the server's defaults when None); last_turn:
    "answer" asks the last turn max_turns allows for the final answer (tool_choice none), "tools" does not.
    output_schema: the JSON Schema its final answer must match.

    >>> Agent(name="triage", version="1", instructions="Sort {{$.input.ticket}}", model="tier1").to_dict()
    {'name': 'triage', 'version': '1', 'instructions': 'Sort {{$.input.ticket}}', 'model': 'tier1'}
    """

    name: str
    version: str
    instructions: str
    model: str
    description: str | None = None
    temperature: float | None = None
    max_output_tokens: int | None = None
    tools: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    handoffs: tuple[str, ...] = ()
    approval: tuple[str, ...] = ()
    max_turns: int | None = None
    last_turn: Literal["tools", "answer"] | None = None
    max_tokens: int | None = None
    wall_seconds: float | None = None
    output_schema: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The document exactly as an agent file would hold it."""
        document: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "instructions": self.instructions,
            "model": self.model,
        }
        for key in ("description", "temperature", "max_output_tokens"):
            _put(document, key, getattr(self, key))
        for key in ("tools", "agents", "handoffs", "approval"):
            if getattr(self, key):
                document[key] = list(getattr(self, key))
        limits: dict[str, Any] = {}
        for key in ("max_turns", "last_turn", "max_tokens", "wall_seconds"):
            _put(limits, key, getattr(self, key))
        if limits:
            document["limits"] = limits
        if self.output_schema is not None:
            document["output_schema"] = copy.deepcopy(dict(self.output_schema))
        return document
