"""The behavior-tree planner: a run ticks a tree of nodes from its root until the root succeeds or fails.

``parse_bt`` checks a workflow document once, when it is applied; ``BtWorkflow.decide`` then replays one
tick of the whole tree over the recorded step instances, linear in the nodes it enters. Shown a
``records.Records``, a tree whose root is a sequence is ticked on from the first child of the root that
had not yet succeeded for good in its last decision of the run (see ``_Ticked``).

The document::

    kind: bt
    root: <node>
    output: <template>          # the default: {leaf: its output, ...} for every named leaf

A node is a tool leaf, a mapping with ``tool``::

    name: search                      # unique among the tree's tool and wait_signal leaves
    tool: web-search@1.0.0            # name@version or name (the latest, pinned when applied)
    queue: default                    # the default
    input: {q: $.input.topic}         # a template (see paths.py); the default "$.input"
    retry: {...}                      # overrides the tool's retry policy (the control plane checks it)
    compensate: {tool, queue, input}  # undoes the leaf if the run fails later (see saga.py)

``agent: name[@version]`` in place of ``tool`` runs an agent there; ``plan: {agent, goal, tools, agents}``
in place of ``tool``, ``queue`` and ``retry`` runs the plan its planning agent makes, as a DAG's plan step
(see planner.py): the leaf succeeds with the plan's output.

A node may also be a mapping with exactly one of these keys::

    sequence: [<node>, ...]                 # each child in turn; fails at the first that fails
    selector: [<node>, ...]                 # each child in turn until one succeeds; fails if none does
    parallel: {children: [<node>, ...], success_threshold: N}   # every child at once; N: all of them
    retry: {times: N, child: <node>}        # the child again after it fails, up to N attempts in all
    timeout: {seconds: S, child: <node>}    # fails if the child has not finished within S seconds
    invert: <node>                          # succeeds when its child fails, and the other way round
    repeat_until: {condition: "<condition>", max: N, child: <node>}
    condition: "<condition>"                # succeeds if it holds (see expr.py); no step instance
    wait_signal: {name: approval, signals: [approve], timeout_seconds: 600}   # fails on timing out

Nodes nest at most MAX_DEPTH (64) deep. A node is running, succeeded or failed. A parallel node succeeds
once N children succeeded and fails once so many failed that N no longer can; nothing more starts under it
then, and what still runs there is left to the control plane, which cancels it when the run ends.
``repeat_until`` runs its child, then tests the condition: the node succeeds once it holds, fails when a
round of the child fails, and fails after ``max`` rounds that did not make it hold.

Keys. The instance of a leaf is keyed by its name, followed, when any of them is above 1, by ``#`` and the
attempt of each enclosing retry and the round of each enclosing repeat_until, outermost first: the second
attempt of a retry around ``search`` is ``search#2``; the first attempt of that retry in round 3 of a
repeat_until around it is ``search#3.1``. A leaf's place in the tree is unique, so it is entered once per
attempt and round, and no key is ever met twice in one tick. The timer of the timeout node at field ``F`` is
keyed ``F.timeout`` with the same suffix; a name has no ``.``, so none clashes.

Timeouts. The timer is a model.Sleep started along with the child. What is recorded says which instances
finished, not in which order, so once the timer has run out while the child runs, the node fails and a
Sleep of 0 seconds keyed ``F.expired`` records that the timer won: a child finishing later does not undo
a failure the run already acted on. The run's outcome waits until such a record is made.

Reads. ``$.steps.X.output`` is the output of the latest instance of leaf X that succeeded, in the order
the tick met them, and null when none has. Whatever reads X (an input, a condition) waits while the latest
instance of X met is queued or running, such as one left running under a settled parallel; and nothing may
read a leaf under another child of a parallel it is under itself (whether that leaf has not started yet or
never will cannot be told apart). Together with the timeout records this makes every status a node reaches
stay the same in every later replay, whatever finishes afterwards. The run's output reads what has
succeeded when the root succeeds, and waits for nothing.

Why the run failed names the node whose failure it is by its field::

    root.sequence[0]: 'search' failed: exit status 1
    root.sequence[1]: every child failed (the last: root.sequence[1].selector[1]: 'backup' dead: ...)
    root.sequence[2]: fewer than 2 of its 3 children can succeed
    root.sequence[3]: gave up after 3 attempts (the last: ...)
    root.sequence[4]: not finished within 30 seconds
    root.sequence[5]: its child succeeded
    root.sequence[6]: condition '$.steps.review.output.score >= 8' did not hold after 5 rounds
    root.sequence[7]: condition '$.steps.search.output.hits > 0' does not hold

A sequence and a repeat_until fail with the reason of the child that failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from bus.states import RunState, TaskState
from control_plane.planning.expr import Condition, compile_condition
from control_plane.planning.fields import (
    DOCUMENT_KEYS,
    NAME,
    QUEUE,
    PlanCall,
    check_keys,
    read_compensation,
    read_number,
    read_plan,
    read_retry,
    read_signals,
    read_string,
    read_target,
    read_template,
)
from control_plane.planning.model import (
    FINISHED,
    AwaitSignal,
    Decision,
    RunOutcome,
    Sleep,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
    failed,
)
from control_plane.planning.paths import Path, Template, compile_template
from control_plane.planning.problems import SpecProblem, WorkflowInvalid
from control_plane.planning.records import Memo, memoized

# Bounds the recursion of parsing and ticking, far beyond any tree written by hand.
MAX_DEPTH = 64
_DOC_KEYS = (*DOCUMENT_KEYS, "root", "output")
_KINDS = ("sequence", "selector", "parallel", "retry", "timeout", "invert", "repeat_until", "condition", "wait_signal")
_TOOL_KEYS = ("name", "tool", "agent", "queue", "input", "retry", "compensate")
_PLAN_KEYS = ("name", "plan", "input", "compensate")
# The keys of the mapping under a node's kind, and how a problem describes it.
_SPECS = {
    "parallel": (("children", "success_threshold"), "children, and optionally success_threshold"),
    "retry": (("times", "child"), "times and child"),
    "timeout": (("seconds", "child"), "seconds and child"),
    "repeat_until": (("condition", "max", "child"), "condition, max and child"),
    "wait_signal": (("name", "signals", "timeout_seconds"), "name, signals, and optionally timeout_seconds"),
}

_SUCCEEDED: Literal["succeeded"] = "succeeded"
_RUNNING: Literal["running"] = "running"


@dataclass(frozen=True, slots=True)
class _Failed:
    """A node that failed; ``reason`` starts with the field of the node whose failure it is."""

    reason: str


_Status: TypeAlias = Literal["succeeded", "running"] | _Failed


@dataclass(frozen=True, slots=True)
class _Visit:
    """The attempt of each enclosing retry and round of each enclosing repeat_until, outermost first.

    suffix: what the keys of the instances made in this visit end with ("" while every number is 1).
    """

    numbers: tuple[int, ...] = ()
    suffix: str = ""

    def then(self, number: int) -> _Visit:
        numbers = (*self.numbers, number)
        if self.suffix or number != 1:
            return _Visit(numbers, "#" + ".".join(map(str, numbers)))
        return _Visit(numbers)


_FIRST = _Visit()


class _Tick:
    """One replay of the tree: the records, what readers see of the leaves met so far, what is to start.

    open: the leaves whose latest instance met is queued or running, which readers wait for.
    met: how many keys the tick has looked up; an attempt that looked up none would fail the same way again.
    looked_up: every key looked up, in order (a memo depends on the records of those it kept the effect of).
    undo: how to put ``outputs`` and ``open`` back as they were before the changes made since it was emptied:
        (leaf name, its entry in outputs or _ABSENT, whether it was open), newest last.
    """

    __slots__ = ("context", "looked_up", "met", "open", "outputs", "starts", "states", "undo")

    def __init__(self, run_input: Any, states: Mapping[str, StepState]) -> None:
        self.states = states
        self.outputs: dict[str, dict[str, Any]] = {}
        self.context = {"input": run_input, "steps": self.outputs}
        self.open: set[str] = set()
        self.starts: list[Start] = []
        self.met = 0
        self.looked_up: list[str] = []
        self.undo: list[tuple[str, Any, bool]] = []

    def record(self, key: str) -> StepState | None:
        self.met += 1
        self.looked_up.append(key)
        return self.states.get(key)

    def leaf(self, field: str, name: str, key: str) -> _Status | None:
        """The status of instance ``key`` of leaf ``name`` as recorded (None: no record yet)."""
        record = self.record(key)
        if record is None:
            return None
        self.undo.append((name, self.outputs.get(name, _ABSENT), name in self.open))
        if record.state not in FINISHED:
            self.open.add(name)
            return _RUNNING
        self.open.discard(name)
        if record.state == TaskState.SUCCEEDED:
            self.outputs[name] = {"output": record.output}
            return _SUCCEEDED
        return _Failed(f"{field}: {name!r} {record.state}" + (f": {record.error}" if record.error else ""))

    def roll_back(self) -> None:
        """Undo what leaves did to ``outputs`` and ``open`` since ``undo`` was last emptied."""
        while self.undo:
            name, entry, was_open = self.undo.pop()
            if entry is _ABSENT:
                self.outputs.pop(name, None)
            else:
                self.outputs[name] = entry
            if was_open:
                self.open.add(name)
            else:
                self.open.discard(name)

    def waits_for(self, reads: frozenset[str]) -> bool:
        return not self.open.isdisjoint(reads)

    def apart(self, node: Node, visit: _Visit) -> tuple[_Status, list[Start]]:
        """Tick ``node``, keeping what it would start apart for the caller to keep or drop."""
        kept, self.starts = self.starts, []
        status = node.tick(self, visit)
        made, self.starts = self.starts, kept
        return status, made


_ABSENT = object()


class _Ticked(Memo):
    """How far a run's tick of a root sequence got for good: its first ``done`` children succeeded and
    started nothing, leaving ``tick`` as it stands (their outputs, the leaves left open), from the records
    of the keys in ``used``.

    Kept in a ``Records`` from one decision to the next, a decision ticks on from child ``done``, so it
    costs what the children not yet done do; a record in ``used`` set again (never, in the engine: a
    finished instance stays so, and the records a finished child found missing stay missing) sends the
    next decision back to a tick from the root.
    """

    __slots__ = ("done", "tick", "used")

    def __init__(self, run_input: Any) -> None:
        super().__init__(run_input)
        self.tick = _Tick(run_input, {})
        self.done = 0
        self.used: set[str] = set()

    def absorb(self, changed: list[str]) -> bool:
        return self.used.isdisjoint(changed)


# --- nodes ----------------------------------------------------------------------------------------------
#
# Each node's ``field`` is where it is in the document (``root``, ``root.sequence[2]``...); ``reads`` are
# the names of the leaves whose outputs a node's input or condition reads.


@dataclass(frozen=True, slots=True)
class ToolLeaf:
    """Calls ``tool`` with ``input`` rendered when an instance starts; or asks for ``plan`` (a plan leaf)."""

    field: str
    name: str
    tool: ToolRef
    queue: str
    input: Template
    reads: frozenset[str]
    plan: PlanCall | None = None

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        key = self.name + visit.suffix
        status = tick.leaf(self.field, self.name, key)
        if status is not None:
            return status
        if not tick.waits_for(self.reads):
            if self.plan is not None:
                tick.starts.append(Start(key, self.name, self.plan.ask(tick.context)))
                return _RUNNING
            call = ToolCall(
                self.tool.name, self.tool.version, self.queue, self.input.render(tick.context), self.tool.agent
            )
            tick.starts.append(Start(key, self.name, call))
        return _RUNNING


@dataclass(frozen=True, slots=True)
class WaitLeaf:
    """Waits for a signal: succeeds with ``{"signal": name, "data": data}``, fails on timing out."""

    field: str
    name: str
    wait: AwaitSignal

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        key = self.name + visit.suffix
        status = tick.leaf(self.field, self.name, key)
        if status is not None:
            return status
        tick.starts.append(Start(key, self.name, self.wait))
        return _RUNNING


@dataclass(frozen=True, slots=True)
class ConditionLeaf:
    field: str
    condition: Condition
    reads: frozenset[str]

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        if tick.waits_for(self.reads):
            return _RUNNING
        if self.condition.holds(tick.context):
            return _SUCCEEDED
        return _Failed(f"{self.field}: condition {self.condition.text!r} does not hold")


@dataclass(frozen=True, slots=True)
class SequenceNode:
    field: str
    children: tuple[Node, ...]

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        for child in self.children:
            status = child.tick(tick, visit)
            if status != _SUCCEEDED:
                return status
        return _SUCCEEDED


@dataclass(frozen=True, slots=True)
class SelectorNode:
    field: str
    children: tuple[Node, ...]

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        reason = ""
        for child in self.children:
            status = child.tick(tick, visit)
            if not isinstance(status, _Failed):
                return status
            reason = status.reason
        return _Failed(f"{self.field}: every child failed (the last: {reason})")


@dataclass(frozen=True, slots=True)
class ParallelNode:
    field: str
    children: tuple[Node, ...]
    success_threshold: int

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        results = [tick.apart(child, visit) for child in self.children]
        # Children that start nothing, not even a timeout's record, stay as they are in every later tick:
        # when they settle the node, nothing under it needs starting.
        status = self._settle(status for status, made in results if not made)
        if status != _RUNNING:
            return status
        status = self._settle(status for status, _ in results)
        for child_status, made in results:
            if status == _RUNNING or child_status != _RUNNING:
                tick.starts.extend(made)
        return status

    def _settle(self, statuses: Iterable[_Status]) -> _Status:
        succeeded = failed = 0
        for status in statuses:
            if status == _SUCCEEDED:
                succeeded += 1
            elif isinstance(status, _Failed):
                failed += 1
        total = len(self.children)
        if succeeded >= self.success_threshold:
            return _SUCCEEDED
        if failed > total - self.success_threshold:
            return _Failed(f"{self.field}: fewer than {self.success_threshold} of its {total} children can succeed")
        return _RUNNING


@dataclass(frozen=True, slots=True)
class RetryNode:
    field: str
    times: int
    child: Node

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        reason = ""
        for attempt in range(1, self.times + 1):
            met = tick.met
            status = self.child.tick(tick, visit.then(attempt))
            if not isinstance(status, _Failed):
                return status
            reason = status.reason
            if tick.met == met:
                break
        return _Failed(f"{self.field}: gave up after {_count(self.times, 'attempt')} (the last: {reason})")


@dataclass(frozen=True, slots=True)
class TimeoutNode:
    field: str
    seconds: float
    child: Node

    @property
    def timer(self) -> str:
        """The name of the element of its timer, and of the record that the timer ran out first."""
        return f"{self.field}.timeout"

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        status, made = tick.apart(self.child, visit)
        expired = f"{self.field}.expired{visit.suffix}"
        if tick.record(expired) is not None:
            return self._timed_out()
        if status != _RUNNING:
            tick.starts.extend(made)
            return status
        key = self.timer + visit.suffix
        timer = tick.record(key)
        if timer is None:
            tick.starts.append(Start(key, self.timer, Sleep(self.seconds)))
        elif timer.state in FINISHED:
            tick.starts.append(Start(expired, self.timer, Sleep(0)))
            return self._timed_out()
        tick.starts.extend(made)
        return _RUNNING

    def _timed_out(self) -> _Failed:
        return _Failed(f"{self.field}: not finished within {self.seconds:g} seconds")


@dataclass(frozen=True, slots=True)
class InvertNode:
    field: str
    child: Node

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        status = self.child.tick(tick, visit)
        if isinstance(status, _Failed):
            return _SUCCEEDED
        if status == _SUCCEEDED:
            return _Failed(f"{self.field}: its child succeeded")
        return _RUNNING


@dataclass(frozen=True, slots=True)
class RepeatUntilNode:
    field: str
    condition: Condition
    reads: frozenset[str]
    max: int
    child: Node

    def tick(self, tick: _Tick, visit: _Visit) -> _Status:
        for round_ in range(1, self.max + 1):
            met = tick.met
            status = self.child.tick(tick, visit.then(round_))
            if status != _SUCCEEDED:
                return status
            if tick.waits_for(self.reads):
                return _RUNNING
            if self.condition.holds(tick.context):
                return _SUCCEEDED
            if tick.met == met:
                break
        return _Failed(
            f"{self.field}: condition {self.condition.text!r} did not hold after {_count(self.max, 'round')}"
        )


Node: TypeAlias = (
    ToolLeaf
    | WaitLeaf
    | ConditionLeaf
    | SequenceNode
    | SelectorNode
    | ParallelNode
    | RetryNode
    | TimeoutNode
    | InvertNode
    | RepeatUntilNode
)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


@dataclass(frozen=True, slots=True)
class BtWorkflow:
    """A checked behavior-tree workflow, a ``model.Plan``.

    root: the tree.
    output: the template of the run's output (the default one when the document gives none).
    steps: every tool and wait_signal leaf by name, and the timer of every timeout node (``<field>.timeout``).
    signals: every signal a wait_signal leaf waits for.
    """

    root: Node
    output: Template
    steps: Mapping[str, StepInfo]
    signals: frozenset[str]

    @property
    def kind(self) -> str:
        return "bt"

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        """The next move of a run: what to start, or how the run ended."""
        if isinstance(self.root, SequenceNode):
            return memoized(self, run_input, states, _Ticked, self._tick_on)
        tick = _Tick(run_input, states)
        return self._decision(self.root.tick(tick, _FIRST), tick)

    def _tick_on(self, ticked: _Ticked, states: Mapping[str, StepState]) -> Decision:
        """Tick the root sequence on from its first child not done for good (``SequenceNode.tick`` from
        there), and count as done for good each child that succeeds starting nothing while all before it do."""
        assert isinstance(self.root, SequenceNode)
        children = self.root.children
        tick = ticked.tick
        tick.states, tick.starts = states, []
        status: _Status = _SUCCEEDED
        for i in range(ticked.done, len(children)):
            status = children[i].tick(tick, _FIRST)
            if status == _SUCCEEDED and not tick.starts and ticked.done == i:
                ticked.done = i + 1
                ticked.used.update(tick.looked_up)
                tick.looked_up.clear()
                tick.undo.clear()
            if status != _SUCCEEDED:
                break
        decision = self._decision(status, tick)
        # What the children not done for good did is done again by the next decision.
        tick.roll_back()
        tick.looked_up.clear()
        tick.states, tick.starts = {}, []
        return decision

    def _decision(self, status: _Status, tick: _Tick) -> Decision:
        # A settled root leaves nothing to start but the records of timers that ran out first; the outcome
        # waits for them, so that no later replay can disagree with it.
        if status == _RUNNING or tick.starts:
            return Decision(tuple(tick.starts), None)
        if isinstance(status, _Failed):
            return failed(status.reason)
        return Decision((), RunOutcome(RunState.SUCCEEDED, self.output.render(tick.context), None))


# --- checking -------------------------------------------------------------------------------------------

# The parallel nodes a node is under, from the root down: (the parallel's field, the index of its child).
_Lanes: TypeAlias = tuple[tuple[str, int], ...]


def parse_bt(doc: Mapping[str, Any]) -> BtWorkflow:
    """Check a behavior-tree workflow document; raises WorkflowInvalid with every problem found."""
    reader = _Reader()
    for key in doc:
        if key not in _DOC_KEYS:
            reader.problem(str(key), f"unknown key; a bt workflow has {', '.join(_DOC_KEYS)}")
    root = reader.node(doc.get("root"), "root")
    output = reader.output(doc.get("output"))
    reader.check_reads()
    if reader.problems or root is None or output is None:
        raise WorkflowInvalid(reader.problems)
    return BtWorkflow(root, output, reader.steps, frozenset(reader.signals))


class _Reader:
    """Reads the tree depth first, collecting every problem; a node with a problem in it reads as None.

    leaves: each leaf name with its node's field and lanes, for the reads checked once all are known.
    reads: (field, leaf name, lanes of the reader) of every output read.
    """

    def __init__(self) -> None:
        self.problems: list[SpecProblem] = []
        self.leaves: dict[str, tuple[str, _Lanes]] = {}
        self.reads: list[tuple[str, str, _Lanes]] = []
        self.steps: dict[str, StepInfo] = {}
        self.signals: set[str] = set()
        self.lanes: _Lanes = ()
        self.depth = 0

    def problem(self, field: str, detail: str) -> None:
        self.problems.append(SpecProblem(field, detail))

    def node(self, raw: Any, field: str) -> Node | None:
        if raw is None:
            self.problem(field, "required")
            return None
        if not isinstance(raw, Mapping):
            self.problem(field, "a node must be a mapping")
            return None
        kind = self.kind(raw, field)
        if kind is None:
            return None
        if self.depth == MAX_DEPTH:
            self.problem(field, f"nodes nest at most {MAX_DEPTH} deep")
            return None
        self.depth += 1
        node = _NODE_READERS[kind](self, raw, field)
        self.depth -= 1
        return node

    def kind(self, raw: Mapping[str, Any], field: str) -> str | None:
        """The kind of node ``raw`` is, its keys checked; None (reported) when it cannot be told."""
        kinds = [kind for kind in _KINDS if kind in raw]
        # A tool leaf's ``retry`` is its retry policy, not a retry node.
        if "plan" in raw:
            check_keys(raw, _PLAN_KEYS, field, "a plan leaf", self.problems)
            return "plan"
        if "tool" in raw or "agent" in raw or (not kinds and "name" in raw):
            check_keys(raw, _TOOL_KEYS, field, "a tool leaf", self.problems)
            return "tool"
        if len(kinds) == 1:
            check_keys(raw, (kinds[0],), field, f"a {kinds[0]} node", self.problems)
            return kinds[0]
        have = f", not {' and '.join(kinds)}" if kinds else ""
        self.problem(field, f"a node is a tool leaf (name and tool) or has exactly one of {', '.join(_KINDS)}{have}")
        return None

    def spec(self, raw: Mapping[str, Any], kind: str, field: str) -> Mapping[str, Any] | None:
        """The mapping under a node's kind, its keys checked."""
        keys, description = _SPECS[kind]
        value = raw[kind]
        if not isinstance(value, Mapping):
            self.problem(f"{field}.{kind}", f"must be a mapping with {description}")
            return None
        check_keys(value, keys, f"{field}.{kind}", f"a {kind} node", self.problems)
        return value

    def children(self, value: Any, field: str, parallel: str | None = None) -> tuple[Node, ...] | None:
        """The nodes of the list ``value``; ``parallel``: the field of the parallel node they are children of."""
        if not isinstance(value, list) or not value:
            self.problem(field, "required" if value is None else "must be a list of nodes, with at least one")
            return None
        outer = self.lanes
        nodes = []
        for i, item in enumerate(value):
            if parallel is not None:
                self.lanes = (*outer, (parallel, i))
            nodes.append(self.node(item, f"{field}[{i}]"))
        self.lanes = outer
        built = [node for node in nodes if node is not None]
        return tuple(built) if len(built) == len(nodes) else None

    def tool_leaf(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        name = read_string(raw, "name", field, NAME, self.problems)
        tool = read_target(raw, field, self.problems)
        queue = read_string(raw, "queue", field, QUEUE, self.problems, default="default")
        template = read_template(raw, "input", field, "$.input", self.problems, missing_is_null=True)
        retry = read_retry(raw, field, self.problems)
        compensate = read_compensation(raw, field, name, self.problems)
        reads: list[str] = []
        for path_field, path in template.paths if template is not None else ():
            if path.step is not None:
                self.read(path_field, [path.step])
                reads.append(path.step)
        if name is not None:
            self.name(name, f"{field}.name", field)
            self.steps[name] = StepInfo(name, field, tool, retry, compensate)
        if len(self.problems) > count or name is None or tool is None or queue is None or template is None:
            return None
        return ToolLeaf(field, name, tool, queue, template, frozenset(reads))

    def plan_leaf(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        name = read_string(raw, "name", field, NAME, self.problems)
        read = read_plan(raw, field, self.problems, missing_is_null=True)
        compensate = read_compensation(raw, field, name, self.problems)
        reads: list[str] = []
        for template in (read.goal, read.input) if read is not None else ():
            for path_field, path in template.paths if template is not None else ():
                if path.step is not None:
                    self.read(path_field, [path.step])
                    reads.append(path.step)
        if name is not None:
            self.name(name, f"{field}.name", field)
            planner, uses = (read.planner, read.uses) if read is not None else (None, ())
            self.steps[name] = StepInfo(name, field, planner, None, compensate, uses)
        if len(self.problems) > count or name is None or read is None or read.call is None:
            return None
        plan = read.call
        return ToolLeaf(field, name, plan.planner, "default", plan.input, frozenset(reads), plan)

    def wait_signal(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        spec = self.spec(raw, "wait_signal", field)
        if spec is None:
            return None
        where = f"{field}.wait_signal"
        name = read_string(spec, "name", where, NAME, self.problems)
        signals = read_signals(spec, where, self.problems)
        timeout = self.seconds(spec, "timeout_seconds", where, required=False)
        if name is not None:
            self.name(name, f"{where}.name", field)
            self.steps[name] = StepInfo(name, field)
        if len(self.problems) > count or name is None or signals is None:
            return None
        self.signals.update(signals)
        return WaitLeaf(field, name, AwaitSignal(signals, timeout))

    def condition_leaf(self, raw: Mapping[str, Any], field: str) -> Node | None:
        condition = self.condition(raw["condition"], f"{field}.condition")
        return None if condition is None else ConditionLeaf(field, condition, _reads(condition.paths))

    def sequence(self, raw: Mapping[str, Any], field: str) -> Node | None:
        children = self.children(raw["sequence"], f"{field}.sequence")
        return None if children is None else SequenceNode(field, children)

    def selector(self, raw: Mapping[str, Any], field: str) -> Node | None:
        children = self.children(raw["selector"], f"{field}.selector")
        return None if children is None else SelectorNode(field, children)

    def parallel(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        spec = self.spec(raw, "parallel", field)
        if spec is None:
            return None
        where = f"{field}.parallel"
        children = self.children(spec.get("children"), f"{where}.children", parallel=field)
        threshold = read_number(spec, "success_threshold", where, self.problems, minimum=1, integer=True)
        if children is not None and threshold is not None and threshold > len(children):
            detail = f"must be at most the number of children, {len(children)}, not {threshold}"
            self.problem(f"{where}.success_threshold", detail)
        if len(self.problems) > count or children is None:
            return None
        return ParallelNode(field, children, len(children) if threshold is None else int(threshold))

    def retry(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        spec = self.spec(raw, "retry", field)
        if spec is None:
            return None
        times = self.number(spec, "times", f"{field}.retry")
        child = self.node(spec.get("child"), f"{field}.retry.child")
        if len(self.problems) > count or times is None or child is None:
            return None
        return RetryNode(field, times, child)

    def timeout(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        spec = self.spec(raw, "timeout", field)
        if spec is None:
            return None
        seconds = self.seconds(spec, "seconds", f"{field}.timeout", required=True)
        child = self.node(spec.get("child"), f"{field}.timeout.child")
        if len(self.problems) > count or seconds is None or child is None:
            return None
        node = TimeoutNode(field, seconds, child)
        self.steps[node.timer] = StepInfo(node.timer, node.timer)
        return node

    def invert(self, raw: Mapping[str, Any], field: str) -> Node | None:
        child = self.node(raw["invert"], f"{field}.invert")
        return None if child is None else InvertNode(field, child)

    def repeat_until(self, raw: Mapping[str, Any], field: str) -> Node | None:
        count = len(self.problems)
        spec = self.spec(raw, "repeat_until", field)
        if spec is None:
            return None
        where = f"{field}.repeat_until"
        condition = self.condition(spec.get("condition"), f"{where}.condition")
        maximum = self.number(spec, "max", where)
        child = self.node(spec.get("child"), f"{where}.child")
        if len(self.problems) > count or condition is None or maximum is None or child is None:
            return None
        return RepeatUntilNode(field, condition, _reads(condition.paths), maximum, child)

    def condition(self, text: Any, field: str) -> Condition | None:
        if text is None:
            self.problem(field, "required")
            return None
        try:
            condition = compile_condition(text, field)
        except WorkflowInvalid as exc:
            self.problems.extend(exc.problems)
            return None
        self.read(field, _reads(condition.paths))
        return condition

    def number(self, spec: Mapping[str, Any], key: str, field: str) -> int | None:
        """A required integer >= 1."""
        if spec.get(key) is None:
            self.problem(f"{field}.{key}", "required")
            return None
        value = read_number(spec, key, field, self.problems, minimum=1, integer=True)
        return None if value is None else int(value)

    def seconds(self, spec: Mapping[str, Any], key: str, field: str, *, required: bool) -> float | None:
        """A finite number of seconds > 0."""
        value = spec.get(key)
        if value is None:
            if required:
                self.problem(f"{field}.{key}", "required")
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
            self.problem(f"{field}.{key}", f"must be a number of seconds > 0, not {value!r}")
            return None
        return value

    def name(self, name: str, name_field: str, field: str) -> None:
        first = self.leaves.get(name)
        if first is None:
            self.leaves[name] = (field, self.lanes)
        else:
            self.problem(name_field, f"{name!r} is already the name of the leaf at {first[0]}")

    def read(self, field: str, names: Iterable[str]) -> None:
        self.reads.extend((field, name, self.lanes) for name in names)

    def output(self, raw: Any) -> Template | None:
        if raw is None:
            raw = {name: f"$.steps.{name}.output" for name in self.leaves}
        try:
            template = compile_template(raw, "output", missing_is_null=True)
        except WorkflowInvalid as exc:
            self.problems.extend(exc.problems)
            return None
        for path_field, path in template.paths:
            if path.step is not None:
                self.reads.append((path_field, path.step, ()))
        return template

    def check_reads(self) -> None:
        """Every leaf read exists, and is not under another child of a parallel the reader is under."""
        for field, name, lanes in self.reads:
            leaf = self.leaves.get(name)
            if leaf is None:
                self.problem(field, f"no tool or wait_signal leaf is named {name!r}")
            elif (parallel := _beside(lanes, leaf[1])) is not None:
                detail = f"{name!r} runs beside it, under another child of the parallel at {parallel}"
                self.problem(field, f"{detail}; only what comes after that parallel may read it")


_NODE_READERS: dict[str, Callable[[_Reader, Mapping[str, Any], str], Node | None]] = {
    "tool": _Reader.tool_leaf,
    "plan": _Reader.plan_leaf,
    "wait_signal": _Reader.wait_signal,
    "condition": _Reader.condition_leaf,
    "sequence": _Reader.sequence,
    "selector": _Reader.selector,
    "parallel": _Reader.parallel,
    "retry": _Reader.retry,
    "timeout": _Reader.timeout,
    "invert": _Reader.invert,
    "repeat_until": _Reader.repeat_until,
}


def _reads(paths: Iterable[Path]) -> frozenset[str]:
    return frozenset(path.step for path in paths if path.step is not None)


def _beside(reader: _Lanes, leaf: _Lanes) -> str | None:
    """The field of a parallel node that has the reader and the leaf under different children, if any."""
    lanes = dict(reader)
    for parallel, child in leaf:
        if lanes.get(parallel, child) != child:
            return parallel
    return None


# --- benchmarks -----------------------------------------------------------------------------------------

_GROUP_NODES = 17


def benchmark_document(nodes: int = 1000) -> dict[str, Any]:
    """A valid document of exactly ``nodes`` nodes (at least 18), for benchmarks and tests.

    The root is a sequence of groups of 17 nodes, each a sequence using every kind of node but
    wait_signal (its leaves call ``echo`` with ``{"n": ...}``), and then tool leaves to make up the count.
    A run with the input ``{"n": 0}`` in which every call echoes its input and no timer runs out succeeds.
    """
    if nodes < _GROUP_NODES + 1:
        raise ValueError(f"a benchmark tree has at least {_GROUP_NODES + 1} nodes")
    groups = (nodes - 1) // _GROUP_NODES
    children = [_benchmark_group(i) for i in range(groups)]
    previous = f"$.steps.check-{groups - 1}.output.n"
    children.extend(_echo(f"pad-{i}", previous) for i in range(nodes - 1 - groups * _GROUP_NODES))
    return {"kind": "bt", "root": {"sequence": children}}


def _benchmark_group(i: int) -> dict[str, Any]:
    fetched = f"$.steps.fetch-{i}.output.n"
    return {
        "sequence": [
            _echo(f"fetch-{i}", f"$.steps.check-{i - 1}.output.n" if i else "$.input.n"),
            {"selector": [_echo(f"primary-{i}", fetched), _echo(f"backup-{i}", fetched)]},
            {
                "parallel": {
                    "success_threshold": 2,
                    "children": [_echo(f"{lane}-{i}", fetched) for lane in ("left", "middle", "right")],
                }
            },
            {"retry": {"times": 2, "child": _echo(f"flaky-{i}", fetched)}},
            {"timeout": {"seconds": 60, "child": _echo(f"slow-{i}", fetched)}},
            {"invert": {"condition": f"$.steps.fetch-{i}.output.stop == true"}},
            {
                "repeat_until": {
                    "condition": f"$.steps.check-{i}.output.n >= 0",
                    "max": 3,
                    "child": _echo(f"check-{i}", fetched),
                }
            },
        ]
    }


def _echo(name: str, n: str) -> dict[str, Any]:
    return {"name": name, "tool": "echo@1.0.0", "input": {"n": n}}
