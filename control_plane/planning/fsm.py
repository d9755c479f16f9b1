"""The finite-state-machine planner: a run walks from an initial state along transitions to a final state.

A state either calls a tool (``tool``), runs an agent (``agent``), runs a plan its planning agent makes
(``plan: {agent, goal, tools, agents}``, as a DAG's plan step: see planner.py), waits for a signal
(``wait``), sleeps (``sleep_seconds``) or ends the run (``final``). After a state's step instance
succeeds, its transitions are tried in order: the first whose ``when`` condition holds (or whose
``signal`` arrived, in a wait state) is taken; one with neither is always taken. A failed instance takes
the ``timeout: true`` transition when a wait timed out, else goes to
``on_failure``, else fails the run. States may be visited again: the n-th visit of state ``S`` is the step
instance ``S#n`` (the first is ``S``), so loops replay like anything else.

``parse_fsm`` checks a document once, when it is applied; ``FsmWorkflow.decide`` then replays the walk from
the initial state over the recorded instances, linear in the visits made so far; shown a
``records.Records``, it walks on from where its last decision of the run stopped instead, so that a whole
run is linear in its visits. Inputs, outputs and
conditions read ``$.steps.S.output``, the latest output of ``S`` on the walk; unlike in a DAG, a state
may be read before it has run (a loop reads the previous round), so a path that finds nothing reads null.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

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
from control_plane.planning.paths import Template
from control_plane.planning.problems import SpecProblem, WorkflowInvalid, child_field
from control_plane.planning.records import Memo, memoized

DEFAULT_MAX_STEPS = 100
_DOC_KEYS = (*DOCUMENT_KEYS, "initial", "max_steps", "states")
# The key that makes a state of each kind; a state has exactly one of them.
_KINDS = ("tool", "agent", "plan", "wait", "sleep_seconds", "final")
_STATE_KEYS = {
    "tool": ("tool", "queue", "input", "retry", "compensate", "transitions", "on_failure"),
    "agent": ("agent", "queue", "input", "retry", "compensate", "transitions", "on_failure"),
    "plan": ("plan", "input", "compensate", "transitions", "on_failure"),
    "wait": ("wait", "transitions", "on_failure"),
    "sleep_seconds": ("sleep_seconds", "transitions", "on_failure"),
    "final": ("final", "status", "error", "output"),
}
_ANY_STATE_KEYS = tuple(dict.fromkeys(key for keys in _STATE_KEYS.values() for key in keys))
_STATE_WHAT = {
    "tool": "an action state",
    "agent": "an agent state",
    "plan": "a plan state",
    "wait": "a wait state",
    "sleep_seconds": "a sleep state",
    "final": "a final state",
}
_WAIT_KEYS = ("signals", "timeout_seconds")
_TRANSITION_KEYS = ("to", "when", "signal", "timeout")
_GUARDS = ("when", "signal", "timeout")
_NOTHING_YET = Decision((), None)


@dataclass(frozen=True, slots=True)
class Transition:
    """Where to go next. At most one guard: ``when`` (a condition on the outputs so far), ``signal`` (the
    signal a wait state received) or ``timeout`` (a wait state timed out); with none, always taken."""

    to: str
    when: Condition | None = None
    signal: str | None = None
    timeout: bool = False

    def taken_on_success(self, signal: str | None, context: Mapping[str, Any]) -> bool:
        if self.timeout:
            return False
        if self.signal is not None:
            return self.signal == signal
        return self.when is None or self.when.holds(context)


@dataclass(frozen=True, slots=True)
class CallTool:
    """An action state's tool call, its input rendered on every visit."""

    tool: ToolRef
    queue: str
    input: Template

    def call(self, context: Mapping[str, Any]) -> ToolCall:
        return ToolCall(self.tool.name, self.tool.version, self.queue, self.input.render(context), self.tool.agent)


_Action = CallTool | PlanCall | Sleep | AwaitSignal


@dataclass(frozen=True, slots=True)
class FsmState:
    """A state that is not final: each visit is one step instance doing ``action``."""

    name: str
    action: _Action
    transitions: tuple[Transition, ...]
    on_failure: str | None

    def start(self, key: str, context: Mapping[str, Any]) -> Start:
        if isinstance(self.action, CallTool):
            return Start(key, self.name, self.action.call(context))
        if isinstance(self.action, PlanCall):
            return Start(key, self.name, self.action.ask(context))
        return Start(key, self.name, self.action)

    def follow(self, record: StepState, context: Mapping[str, Any]) -> str | Decision:
        """The state to go to after the finished instance ``record``, or the decision that fails the run."""
        if record.state == TaskState.SUCCEEDED:
            signal = record.output.get("signal") if isinstance(record.output, Mapping) else None
            for transition in self.transitions:
                if transition.taken_on_success(signal, context):
                    return transition.to
            return failed(f"no transition of state {self.name!r} matches")
        if (record.error or "").startswith("timed out"):
            for transition in self.transitions:
                if transition.timeout:
                    return transition.to
        if self.on_failure is not None:
            return self.on_failure
        return failed(f"state {self.name!r} failed: {record.error or record.state}")


@dataclass(frozen=True, slots=True)
class FinalState:
    """A state that ends the run: succeeded with ``output`` rendered, or failed with ``error``."""

    name: str
    status: Literal[RunState.SUCCEEDED, RunState.FAILED]
    output: Template | None
    error: str

    def outcome(self, context: Mapping[str, Any]) -> RunOutcome:
        if self.status == RunState.FAILED:
            return RunOutcome(RunState.FAILED, None, self.error)
        return RunOutcome(RunState.SUCCEEDED, self.output.render(context) if self.output else None, None)


@dataclass(frozen=True, slots=True)
class FsmWorkflow:
    """A checked FSM workflow (a model.Plan).

    initial: the state every run starts in.
    max_steps: how many step instances (visits of states that are not final) a run may make.
    states: every state by name.
    steps: the StepInfo of every state that is not final.
    signals: every signal any wait state waits for.
    """

    initial: str
    max_steps: int
    states: Mapping[str, FsmState | FinalState]
    steps: Mapping[str, StepInfo]
    signals: frozenset[str]

    @property
    def kind(self) -> str:
        return "fsm"

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        return memoized(self, run_input, states, lambda run_input: _Walk(run_input, self.initial), self._walk)

    def _walk(self, walk: _Walk, states: Mapping[str, StepState]) -> Decision:
        """Walk on from where ``walk`` stands over the finished instances recorded, to the next move."""
        while not isinstance(state := self.states[walk.current], FinalState):
            if walk.made == self.max_steps:
                return failed(f"max_steps ({self.max_steps}) reached in state {walk.current!r} before a final state")
            visit = walk.visits.get(walk.current, 0) + 1
            key = walk.current if visit == 1 else f"{walk.current}#{visit}"
            record = states.get(key)
            if record is None:
                return Decision((state.start(key, walk.context),), None)
            if record.state not in FINISHED:
                return _NOTHING_YET
            # From here on the walk depends on this record: should it change, the walk starts again.
            walk.used.add(key)
            if record.state == TaskState.SUCCEEDED:
                walk.outputs[walk.current] = {"output": record.output}
            following = state.follow(record, walk.context)
            if isinstance(following, Decision):
                return following
            walk.visits[walk.current] = visit
            walk.made += 1
            walk.current = following
        return Decision((), state.outcome(walk.context))


class _Walk(Memo):
    """Where a run's walk stands after the finished instances it went through (``used``): the state it is
    in, the visits of each state and the steps made so far, and the outputs they left.

    Kept in a ``Records`` from one decision to the next, it walks on from there, so a whole run costs
    what its visits do; a record it used set again (never, in the engine: a finished instance stays so)
    sends the walk back to the initial state.
    """

    __slots__ = ("context", "current", "made", "outputs", "used", "visits")

    def __init__(self, run_input: Any, initial: str) -> None:
        super().__init__(run_input)
        self.current = initial
        self.made = 0
        self.visits: dict[str, int] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.context = {"input": run_input, "steps": self.outputs}
        self.used: set[str] = set()

    def absorb(self, changed: list[str]) -> bool:
        return self.used.isdisjoint(changed)


@dataclass(slots=True)
class _Draft:
    """A state as read from the document, and the names it refers to.

    kind: the key that makes it (tool, wait, sleep_seconds or final); None when it has not exactly one.
    state: None where the state's own fields are invalid.
    targets: (field, state name) of every state the walk may go to next.
    reads: (field, state name) of every state whose output its paths read.
    dead_end: a state that is not final with no transitions.
    lost_edges: some of its transitions could not be read, so where it leads is not known.
    """

    name: str
    field: str
    kind: str | None = None
    state: FsmState | FinalState | None = None
    info: StepInfo | None = None
    targets: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    reads: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    dead_end: bool = False
    lost_edges: bool = False


def parse_fsm(doc: Mapping[str, Any]) -> FsmWorkflow:
    """Check an FSM workflow document; raises WorkflowInvalid with every problem found."""
    problems: list[SpecProblem] = []
    for key in doc:
        if key not in _DOC_KEYS:
            problems.append(SpecProblem(str(key), f"unknown key; an fsm workflow has {', '.join(_DOC_KEYS)}"))
    max_steps = _read_max_steps(doc, problems)
    drafts = {draft.name: draft for draft in _read_states(doc, problems)}
    initial = _read_initial(doc, drafts, problems)
    _check_references(drafts, problems)
    _check_graph(initial, drafts, problems)
    if problems or initial is None:
        raise WorkflowInvalid(problems)
    states = {name: draft.state for name, draft in drafts.items() if draft.state is not None}
    signals = frozenset(
        signal
        for state in states.values()
        if isinstance(state, FsmState) and isinstance(state.action, AwaitSignal)
        for signal in state.action.signals
    )
    infos = {name: draft.info for name, draft in drafts.items() if draft.info is not None}
    return FsmWorkflow(initial, max_steps, states, infos, signals)


def _read_max_steps(doc: Mapping[str, Any], problems: list[SpecProblem]) -> int:
    value = doc.get("max_steps", DEFAULT_MAX_STEPS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problems.append(SpecProblem("max_steps", f"must be an integer >= 1, not {value!r}"))
        return DEFAULT_MAX_STEPS
    return value


def _read_states(doc: Mapping[str, Any], problems: list[SpecProblem]) -> list[_Draft]:
    raw = doc.get("states")
    if not isinstance(raw, Mapping) or not raw:
        detail = "required" if raw is None else "must be a mapping of state names to states, with at least one"
        problems.append(SpecProblem("states", detail))
        return []
    drafts = []
    for name, spec in raw.items():
        draft = _Draft(str(name), child_field("states", str(name)))
        if not isinstance(name, str) or not NAME.pattern.fullmatch(name):
            problems.append(SpecProblem(draft.field, f"a state's name must be {NAME.description}"))
        if isinstance(spec, Mapping):
            _read_state(draft, spec, problems)
        else:
            problems.append(SpecProblem(draft.field, "a state must be a mapping"))
            draft.lost_edges = True
        drafts.append(draft)
    return drafts


def _read_state(draft: _Draft, raw: Mapping[str, Any], problems: list[SpecProblem]) -> None:
    kinds = [key for key in _KINDS if key in raw]
    if len(kinds) != 1:
        have = f", not {' and '.join(kinds)}" if kinds else ""
        problems.append(SpecProblem(draft.field, f"a state has exactly one of {', '.join(_KINDS)}{have}"))
        check_keys(raw, _ANY_STATE_KEYS, draft.field, "a state", problems)
        # Its transitions still count as edges, so that the states around it are judged fairly.
        _read_transitions(draft, raw, None, problems)
        return
    draft.kind = kinds[0]
    check_keys(raw, _STATE_KEYS[draft.kind], draft.field, _STATE_WHAT[draft.kind], problems)
    if draft.kind == "final":
        draft.state = _read_final(draft, raw, problems)
        return
    action: _Action | None
    if draft.kind in ("tool", "agent"):
        action = _read_call(draft, raw, problems)
    elif draft.kind == "plan":
        action = _read_plan(draft, raw, problems)
    else:
        draft.info = StepInfo(draft.name, draft.field)
        action = (
            _read_wait(raw, draft.field, problems) if draft.kind == "wait" else _read_sleep(raw, draft.field, problems)
        )
    draft.dead_end = raw.get("transitions") in (None, [])
    transitions = _read_transitions(draft, raw, action, problems)
    on_failure = _read_on_failure(draft, raw, problems)
    if action is not None and transitions is not None and on_failure is not False:
        draft.state = FsmState(draft.name, action, transitions, on_failure)


def _read_on_failure(draft: _Draft, raw: Mapping[str, Any], problems: list[SpecProblem]) -> str | Literal[False] | None:
    """The state to go to when an instance fails; None if the document names none, False if it is invalid."""
    on_failure = raw.get("on_failure")
    if on_failure is None:
        return None
    if not isinstance(on_failure, str):
        problems.append(SpecProblem(f"{draft.field}.on_failure", "must be a state name"))
        draft.lost_edges = True
        return False
    draft.targets.append((f"{draft.field}.on_failure", on_failure))
    return on_failure


def _read_call(draft: _Draft, raw: Mapping[str, Any], problems: list[SpecProblem]) -> CallTool | None:
    tool = read_target(raw, draft.field, problems)
    queue = read_string(raw, "queue", draft.field, QUEUE, problems, default="default")
    template = read_template(raw, "input", draft.field, "$.input", problems, missing_is_null=True)
    retry = read_retry(raw, draft.field, problems)
    compensate = read_compensation(raw, draft.field, draft.name, problems)
    draft.info = StepInfo(draft.name, draft.field, tool, retry, compensate)
    if template is not None:
        draft.reads.extend(_template_reads(template))
    if tool is None or queue is None or template is None:
        return None
    return CallTool(tool, queue, template)


def _read_plan(draft: _Draft, raw: Mapping[str, Any], problems: list[SpecProblem]) -> PlanCall | None:
    read = read_plan(raw, draft.field, problems, missing_is_null=True)
    compensate = read_compensation(raw, draft.field, draft.name, problems)
    if read is None:
        draft.info = StepInfo(draft.name, draft.field, compensate=compensate)
        return None
    draft.info = StepInfo(draft.name, draft.field, read.planner, None, compensate, read.uses)
    for template in (read.goal, read.input):
        if template is not None:
            draft.reads.extend(_template_reads(template))
    return read.call


def _read_wait(raw: Mapping[str, Any], state_field: str, problems: list[SpecProblem]) -> AwaitSignal | None:
    wait_field = f"{state_field}.wait"
    spec = raw["wait"]
    if not isinstance(spec, Mapping):
        problems.append(SpecProblem(wait_field, "must be a mapping with signals, and optionally timeout_seconds"))
        return None
    count = len(problems)
    check_keys(spec, _WAIT_KEYS, wait_field, "a wait", problems)
    signals = read_signals(spec, wait_field, problems)
    timeout = read_number(spec, "timeout_seconds", wait_field, problems, minimum=0)
    if signals is None or len(problems) > count:
        return None
    return AwaitSignal(signals, timeout)


def _read_sleep(raw: Mapping[str, Any], state_field: str, problems: list[SpecProblem]) -> Sleep | None:
    if raw["sleep_seconds"] is None:
        problems.append(SpecProblem(f"{state_field}.sleep_seconds", "required"))
        return None
    seconds = read_number(raw, "sleep_seconds", state_field, problems, minimum=0)
    return None if seconds is None else Sleep(seconds)


def _read_final(draft: _Draft, raw: Mapping[str, Any], problems: list[SpecProblem]) -> FinalState | None:
    count = len(problems)
    if raw["final"] is not True:
        problems.append(SpecProblem(f"{draft.field}.final", "must be true; a state that is not final leaves it out"))
    status = raw.get("status", RunState.SUCCEEDED)
    if status not in (RunState.SUCCEEDED, RunState.FAILED):
        problems.append(SpecProblem(f"{draft.field}.status", f"must be succeeded or failed, not {status!r}"))
        return None
    failed = status == RunState.FAILED
    error = raw.get("error")
    if error is not None and not failed:
        problems.append(SpecProblem(f"{draft.field}.error", "only a final state with status: failed has an error"))
    elif error is not None and not isinstance(error, str):
        problems.append(SpecProblem(f"{draft.field}.error", f"must be a string, not {error!r}"))
    output = _read_final_output(draft, raw, failed, problems)
    if len(problems) > count:
        return None
    return FinalState(
        draft.name,
        RunState.FAILED if failed else RunState.SUCCEEDED,
        output,
        error or f"the run ended in state {draft.name!r}",
    )


def _read_final_output(
    draft: _Draft, raw: Mapping[str, Any], failed: bool, problems: list[SpecProblem]
) -> Template | None:
    if "output" not in raw:
        return None
    if failed:
        problems.append(SpecProblem(f"{draft.field}.output", "a final state with status: failed has no output"))
        return None
    template = read_template(raw, "output", draft.field, None, problems, missing_is_null=True)
    if template is None:
        return None
    draft.reads.extend(_template_reads(template))
    return template


def _read_transitions(
    draft: _Draft, raw: Mapping[str, Any], action: _Action | None, problems: list[SpecProblem]
) -> tuple[Transition, ...] | None:
    """The state's transitions; None when any is invalid."""
    specs = raw.get("transitions")
    if specs is None:
        return ()
    if not isinstance(specs, list):
        problems.append(SpecProblem(f"{draft.field}.transitions", "must be a list of transitions"))
        draft.lost_edges = True
        return None
    read = [_read_transition(draft, i, spec, i == len(specs) - 1, action, problems) for i, spec in enumerate(specs)]
    return tuple(transition for transition in read if transition is not None) if None not in read else None


def _read_transition(
    draft: _Draft,
    i: int,
    spec: Any,
    last: bool,
    action: _Action | None,
    problems: list[SpecProblem],
) -> Transition | None:
    transition_field = f"{draft.field}.transitions[{i}]"
    if not isinstance(spec, Mapping):
        problems.append(SpecProblem(transition_field, "a transition must be a mapping with to"))
        draft.lost_edges = True
        return None
    count = len(problems)
    check_keys(spec, _TRANSITION_KEYS, transition_field, "a transition", problems)
    guards = [key for key in _GUARDS if key in spec]
    if len(guards) > 1:
        detail = f"a transition has at most one of when, signal and timeout, not {' and '.join(guards)}"
        problems.append(SpecProblem(transition_field, detail))
    elif not guards and not last:
        problems.append(SpecProblem(transition_field, "a transition with no when, signal or timeout must be the last"))
    to = spec.get("to")
    if isinstance(to, str):
        draft.targets.append((f"{transition_field}.to", to))
    else:
        problems.append(SpecProblem(f"{transition_field}.to", "required" if to is None else "must be a state name"))
        draft.lost_edges = True
    when = _read_when(draft, spec, transition_field, problems)
    signal = _read_signal_guard(draft, spec, transition_field, action, problems)
    timeout = _read_timeout_guard(draft, spec, transition_field, action, problems)
    if len(problems) > count or not isinstance(to, str):
        return None
    return Transition(to, when, signal, timeout)


def _read_when(
    draft: _Draft, spec: Mapping[str, Any], transition_field: str, problems: list[SpecProblem]
) -> Condition | None:
    if "when" not in spec:
        return None
    when_field = f"{transition_field}.when"
    try:
        condition = compile_condition(spec["when"], when_field)
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
        return None
    draft.reads.extend((when_field, path.step) for path in condition.paths if path.step is not None)
    return condition


def _read_signal_guard(
    draft: _Draft,
    spec: Mapping[str, Any],
    transition_field: str,
    action: _Action | None,
    problems: list[SpecProblem],
) -> str | None:
    # Where the state's kind or its wait is invalid, that problem is reported already and says enough.
    if "signal" not in spec or draft.kind is None:
        return None
    signal = spec["signal"]
    signal_field = f"{transition_field}.signal"
    if draft.kind != "wait":
        problems.append(SpecProblem(signal_field, "only a wait state has signal transitions"))
    elif isinstance(action, AwaitSignal) and signal not in action.signals:
        waited = ", ".join(action.signals)
        problems.append(SpecProblem(signal_field, f"unknown signal {signal!r}; the state waits for {waited}"))
    return str(signal)


def _read_timeout_guard(
    draft: _Draft,
    spec: Mapping[str, Any],
    transition_field: str,
    action: _Action | None,
    problems: list[SpecProblem],
) -> bool:
    if "timeout" not in spec:
        return False
    timeout_field = f"{transition_field}.timeout"
    if spec["timeout"] is not True:
        problems.append(SpecProblem(timeout_field, f"must be true, not {spec['timeout']!r}"))
    elif draft.kind not in (None, "wait"):
        problems.append(SpecProblem(timeout_field, "only a wait state times out"))
    elif isinstance(action, AwaitSignal) and action.timeout_seconds is None:
        problems.append(SpecProblem(timeout_field, "the state's wait has no timeout_seconds, so it never times out"))
    return True


def _template_reads(template: Template) -> list[tuple[str, str]]:
    return [(path_field, path.step) for path_field, path in template.paths if path.step is not None]


def _read_initial(doc: Mapping[str, Any], drafts: Mapping[str, _Draft], problems: list[SpecProblem]) -> str | None:
    initial = doc.get("initial")
    if initial is None:
        problems.append(SpecProblem("initial", "required"))
    elif not isinstance(initial, str) or initial not in drafts:
        problems.append(SpecProblem("initial", f"unknown state {initial!r}"))
    else:
        return initial
    return None


def _check_references(drafts: Mapping[str, _Draft], problems: list[SpecProblem]) -> None:
    """Every state a transition goes to exists; every state a path reads exists and has an output."""
    for draft in drafts.values():
        for target_field, name in draft.targets:
            if name not in drafts:
                problems.append(SpecProblem(target_field, f"unknown state {name!r}"))
        for read_field, name in draft.reads:
            if name not in drafts:
                problems.append(SpecProblem(read_field, f"unknown state {name!r}"))
            elif drafts[name].kind == "final":
                problems.append(SpecProblem(read_field, f"state {name!r} is final, so it has no output"))


def _check_graph(initial: str | None, drafts: Mapping[str, _Draft], problems: list[SpecProblem]) -> None:
    """Every state goes somewhere, is reached from the initial one, and can lead to a final state."""
    for draft in drafts.values():
        if draft.dead_end:
            detail = "required: a state that is not final needs at least one transition"
            problems.append(SpecProblem(f"{draft.field}.transitions", detail))
    # A state of unknown kind might be meant as final: judging the states that lead to it would only add noise.
    ends = [name for name, draft in drafts.items() if draft.kind in ("final", None)]
    if drafts and not ends:
        problems.append(SpecProblem("states", "no state is final, so no run could end"))
    lost = any(draft.lost_edges or any(to not in drafts for _, to in draft.targets) for draft in drafts.values())
    if initial is None or lost:
        # Where runs go is known only once every transition is; until then the problems above say enough.
        return
    edges = {name: [to for _, to in draft.targets] for name, draft in drafts.items()}
    reachable = _closure([initial], edges)
    can_end = _closure(ends, _reversed(edges)) if ends else set(drafts)
    for name, draft in drafts.items():
        if name not in reachable:
            problems.append(SpecProblem(draft.field, f"unreachable from the initial state {initial!r}"))
        elif name not in can_end and not draft.dead_end:
            problems.append(SpecProblem(draft.field, "no final state can be reached from it"))


def _reversed(edges: Mapping[str, list[str]]) -> dict[str, list[str]]:
    backwards: dict[str, list[str]] = {name: [] for name in edges}
    for name, targets in edges.items():
        for to in targets:
            backwards[to].append(name)
    return backwards


def _closure(starts: Iterable[str], edges: Mapping[str, list[str]]) -> set[str]:
    """Every state reached from ``starts`` along ``edges``, the starts included."""
    seen = set(starts)
    queue = deque(seen)
    while queue:
        for to in edges[queue.popleft()]:
            if to not in seen:
                seen.add(to)
                queue.append(to)
    return seen


def chain_document(length: int) -> dict[str, Any]:
    """A valid FSM document of ``length`` action states and a final one, for benchmarks and tests.

    State ``s<i>`` calls ``echo`` with ``{"n": <the previous state's n>}``, then goes to ``done`` if its
    output has ``stop: true``, else to the next state; a run whose every call echoes its input visits all.
    """
    names = [f"s{i}" for i in range(length)]
    states: dict[str, Any] = {}
    for i, name in enumerate(names):
        previous = f"$.steps.{names[i - 1]}.output.n" if i else "$.input.n"
        states[name] = {
            "tool": "echo@1.0.0",
            "input": {"n": previous},
            "transitions": [
                {"when": f"$.steps.{name}.output.stop == true", "to": "done"},
                {"to": names[i + 1] if i + 1 < length else "done"},
            ],
        }
    states["done"] = {"final": True, "output": {"n": f"$.steps.{names[-1]}.output.n"}}
    return {"kind": "fsm", "initial": names[0], "max_steps": length, "states": states}
