"""The DAG planner: a workflow of steps that each start once all the steps they need are settled.

``parse_dag`` checks a workflow document once, when it is applied; ``DagWorkflow.decide`` is then a pure
function of (workflow, run input, recorded step instances), called on every result, linear in the step
instances plus the needs; shown a ``records.Records``, it looks only at the steps that the records set
since its last decision of the run can change (and those they make ready), so a whole run is linear too.

The document::

    kind: dag
    steps:                          # at least one
      - name: fetch                 # unique in the workflow, the steps inside loops included
        tool: web-fetch@1.2.0       # name@version or name (the latest, pinned when applied)
        queue: default              # the default
        needs: [plan]               # steps that must be settled before this one starts
        input: {url: $.input.url}   # a template (see paths.py); the default "$.input"
        retry: {...}                # overrides the tool's retry policy (the control plane checks it)
        compensate: {tool, queue, input}  # undoes the step if the run fails later (see saga.py); its
                                          # input reads $.input and this step's output only
    output: <template>              # the default: the only sink's output, or {sink: its output, ...}

A step's input, and everything else it reads, may read ``$.input`` and the output of any step it needs,
directly or through other needs. A step instance is keyed by its name; a step is *settled* once it
succeeded, or was skipped, or failed in one of the ways below that do not fail the run. A step that fails
otherwise (failed, dead or cancelled) fails the run at once, and nothing else starts; so does an input that
cannot be rendered. Once every step is settled the run succeeds with the output template's value.

Extensions, each a key of a step:

``when: "<condition>"`` (see expr.py): evaluated once the step's needs are settled; when it does not hold,
the step is skipped: no task, it is settled, and its output reads as null. A join after two conditional
branches therefore starts once both are settled, whichever ran. (A path into a null output, such as
``$.steps.skipped.output.text``, finds nothing and fails the run: read the whole output, or guard the
reader with a ``when`` of its own.)

``continue_on_failure: true``: a step that fails (failed, dead or cancelled, after its fallback if it has
one) does not fail the run; it is settled with the output null.

``fallback: {tool, queue, input}``: when the step failed or is dead (its retries spent; a cancelled step
does not fall back), its fallback instance starts, keyed ``<key>.fallback``, its element named
``<step>.fallback`` (a step name has no ``.``, so none clashes). Its output stands in for the step's; if it
fails too, so does the step. ``queue`` defaults to ``default`` and ``input`` to the step's own input.

``plan: {agent, goal, tools, agents}`` instead of ``tool``, ``queue`` and ``retry``: a plan step (see
planner.py). Its planning agent (``agent``) is asked for a DAG reaching ``goal`` (a template) that uses only
the ``tools`` and ``agents`` listed (at least one); the plan reads the step's ``input`` as its ``$.input``,
and the step's output is the plan's output.

``loop: {steps: [...], until: "<condition>", max_iterations: N}`` instead of ``tool``, ``queue``,
``input``, ``retry`` and ``compensate``: a bounded loop. Its steps are written like any step, but need
only each other (loops do not nest); they may read what the loop step may, besides. Iteration i (from 1) runs them keyed
``<loop>#<i>/<step>``; once they are all settled, ``until`` is evaluated with their outputs: when it holds
the loop succeeds with the output ``{step: its output in that iteration, ...}``; otherwise iteration i+1
starts, and after N iterations the loop fails ("did not converge after N iterations"). Within an
iteration, and in ``until``, ``$.steps.<loop>.output`` reads the previous iteration's output (null in the
first), so each iteration can build on the last. A step of the loop that fails (unless it continues on
failure) fails the loop. The steps of a loop are read from outside only through the loop's output
(``$.steps.<loop>.output.<step>``). A loop step may have ``when``, ``continue_on_failure`` and ``fallback``.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus.states import RunState, TaskState
from control_plane.planning.expr import Condition, compile_condition
from control_plane.planning.fields import (
    NAME,
    QUEUE,
    PlanCall,
    Shape,
    check_keys,
    read_call,
    read_compensation,
    read_number,
    read_plan,
    read_retry,
    read_string,
    read_target,
    read_template,
)
from control_plane.planning.model import (
    FAILURES,
    Decision,
    RunOutcome,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
    failed,
)
from control_plane.planning.paths import PathError, Template, compile_template
from control_plane.planning.problems import SpecProblem, WorkflowInvalid
from control_plane.planning.records import Memo, memoized

_STEP_NAME = Shape(NAME.pattern.pattern, f"a step name matching ^{NAME.pattern.pattern}$")
_STEP_KEYS = (
    "name",
    "tool",
    "agent",
    "queue",
    "needs",
    "input",
    "retry",
    "compensate",
    "when",
    "continue_on_failure",
    "fallback",
    "loop",
    "plan",
)
_LOOP_STEP_KEYS = ("name", "needs", "loop", "when", "continue_on_failure", "fallback")
_LOOP_KEYS = ("steps", "until", "max_iterations")
_FALLBACK = ".fallback"
# What a loop step's fallback is given when it names no input: a loop has no input of its own.
_RUN_INPUT = compile_template("$.input", "input")


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call of a step or a fallback: ``input`` is rendered when the instance starts."""

    tool: ToolRef
    queue: str
    input: Template


@dataclass(frozen=True, slots=True)
class Loop:
    """A bounded loop: ``steps`` in topological order, run again until ``until`` holds."""

    steps: tuple[DagStep, ...]
    until: Condition
    max_iterations: int


@dataclass(frozen=True, slots=True)
class DagStep:
    """One step of a DAG workflow, or of a loop in it (see the module docstring for each field)."""

    name: str
    needs: frozenset[str]
    does: Call | Loop | PlanCall
    when: Condition | None = None
    continue_on_failure: bool = False
    fallback: Call | None = None


@dataclass(frozen=True, slots=True)
class DagWorkflow:
    """A checked DAG workflow, a ``model.Plan``.

    order: the top-level steps in topological order; steps free to go in either order keep their
        document order.
    output: the template of the run's output (the default one when the document gives none).
    steps: every named element (steps, the steps of loops, fallbacks), by name.
    """

    order: tuple[DagStep, ...]
    output: Template
    steps: Mapping[str, StepInfo]
    positions: Mapping[str, int] = dataclasses.field(init=False, repr=False, compare=False)
    """Each top-level step's place in ``order``, by name."""
    followers: tuple[tuple[int, ...], ...] = dataclasses.field(init=False, repr=False, compare=False)
    """The places of the steps that need the step at each place."""

    def __post_init__(self) -> None:
        positions = {step.name: i for i, step in enumerate(self.order)}
        followers: list[list[int]] = [[] for _ in self.order]
        for i, step in enumerate(self.order):
            for need in step.needs:
                if need in positions:
                    followers[positions[need]].append(i)
        object.__setattr__(self, "positions", positions)
        object.__setattr__(self, "followers", tuple(map(tuple, followers)))

    @property
    def kind(self) -> str:
        return "dag"

    @property
    def signals(self) -> frozenset[str]:
        return frozenset()

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        """The next move of a run: what to start, or how the run ended."""
        return memoized(self, run_input, states, lambda run_input: _Progress(self, run_input), self._decide_from)

    def _decide_from(self, progress: _Progress, states: Mapping[str, StepState]) -> Decision:
        """Advance the steps ``progress`` has to look at, in topological order, like a replay of them all."""
        if progress.unread:
            # A replay from the start: the steps with no needs, and those with records, are where it begins.
            progress.unread = False
            progress.absorb(list(states))
        settled, pending, due = progress.settled, progress.pending, progress.due
        starts: list[Start] = []
        again: list[int] = []
        try:
            while pending:
                i = pending[0]
                step = self.order[i]
                recorded = states.get(step.name)
                # Most steps of a long run are done or waiting: see to them here, without the general case's calls.
                if recorded is None and not settled.keys() >= step.needs:
                    # Looked at again once a need settles, or it is recorded.
                    due.discard(heapq.heappop(pending))
                    continue
                made = len(starts)
                if recorded is not None and recorded.state == TaskState.SUCCEEDED and not isinstance(step.does, Loop):
                    settled[step.name] = {"output": recorded.output}
                else:
                    try:
                        error = _advance(step, step.name, progress.context, settled, states, starts)
                    except _InputError as exc:
                        return failed(str(exc))
                    if error is not None:
                        return failed(error)
                if len(starts) > made:
                    # What it starts is asked for again until it is recorded, as a replay would.
                    again.append(heapq.heappop(pending))
                else:
                    due.discard(heapq.heappop(pending))
                if step.name in settled:
                    for follower in self.followers[i]:
                        progress.look_at(follower)
        finally:
            # Still in ``due``: back in the heap for the next decision.
            for i in again:
                heapq.heappush(pending, i)
        if len(settled) < len(self.order):
            return Decision(tuple(starts), None)
        try:
            return Decision((), RunOutcome(RunState.SUCCEEDED, self.output.render(progress.context), None))
        except PathError as exc:
            return failed(f"output: {exc}")


class _Progress(Memo):
    """What a run's records settled so far, and the top-level steps to look at in the next decision.

    settled: the context entry of each settled step (see below); a settled step stays so as long as the
        records it was settled from stay as they are.
    pending: a heap of the places (in ``order``) of the steps to look at: in a replay from the start, the
        steps with no needs and those with records (``unread`` until those are added); then the steps whose
        records were set since, those a settled need may have made ready, and those that asked for starts.
        A step that waits (running, or its needs not settled) is looked at again only when one of those
        happens; one with neither records nor settled needs would only be passed over, as in a replay.
    due: the places in ``pending``.

    Kept in a ``Records`` from one decision to the next, each decision costs what the records set since
    can change; a record of a settled step set again (never, in the engine: a finished instance stays so)
    sends the next decision back to a replay from the start.
    """

    __slots__ = ("context", "due", "pending", "plan", "settled", "unread")

    def __init__(self, plan: DagWorkflow, run_input: Any) -> None:
        super().__init__(run_input)
        self.plan = plan
        self.settled: dict[str, Any] = {}
        self.context = {"input": run_input, "steps": self.settled}
        self.pending = [i for i, step in enumerate(plan.order) if not step.needs]
        self.due = set(self.pending)
        self.unread = True

    def look_at(self, i: int) -> None:
        if i not in self.due:
            self.due.add(i)
            heapq.heappush(self.pending, i)

    def absorb(self, changed: list[str]) -> bool:
        for key in changed:
            # Every key a top-level step reads: <name>, <name>.fallback, <loop>#<i>/<step>[.fallback].
            name = key.split("#", 1)[0].removesuffix(_FALLBACK)
            i = self.plan.positions.get(name)
            if i is None:
                continue
            if name in self.settled:
                return False
            self.look_at(i)
        return True


# --- deciding -------------------------------------------------------------------------------------------
#
# ``settled`` maps each settled step of a scope (the workflow, or one iteration of a loop) to its context
# entry ``{"output": ...}``; the context a step renders against reads the same dict, so it grows as the
# steps are walked in topological order. A step's outcome is an entry (settled), None (waiting, or running,
# or just appended to ``starts``) or a _Failed.


@dataclass(frozen=True, slots=True)
class _Failed:
    """A step instance that did not succeed: its state, and what happened without naming the step."""

    state: TaskState
    detail: str


class _InputError(Exception):
    """An input that cannot be rendered: the run fails, whatever the step says about failures."""


def _advance_all(
    steps: tuple[DagStep, ...],
    prefix: str,
    context: Mapping[str, Any],
    settled: dict[str, Any],
    states: Mapping[str, StepState],
    starts: list[Start],
) -> str | None:
    """Advance every step of a scope whose instances are keyed ``<prefix><name>``; the error that fails it."""
    for step in steps:
        key = prefix + step.name
        recorded = states.get(key)
        # Most steps of a long run are done or waiting: see to them here, without the general case's calls.
        if recorded is None:
            if not settled.keys() >= step.needs:
                continue
        elif recorded.state == TaskState.SUCCEEDED and not isinstance(step.does, Loop):
            settled[step.name] = {"output": recorded.output}
            continue
        error = _advance(step, key, context, settled, states, starts)
        if error is not None:
            return error
    return None


def _advance(
    step: DagStep,
    key: str,
    context: Mapping[str, Any],
    settled: dict[str, Any],
    states: Mapping[str, StepState],
    starts: list[Start],
) -> str | None:
    """Settle ``step`` if it can be, or start what it waits for; the error that fails its scope."""
    result = _outcome(step, key, context, settled, states, starts)
    if isinstance(result, _Failed):
        result = _fall_back(step, key, result, context, states, starts)
        if isinstance(result, _Failed):
            if not step.continue_on_failure:
                return f"step {step.name!r} {result.detail}"
            result = {"output": None}
    if result is not None:
        settled[step.name] = result
    return None


def _outcome(
    step: DagStep,
    key: str,
    context: Mapping[str, Any],
    settled: dict[str, Any],
    states: Mapping[str, StepState],
    starts: list[Start],
) -> dict[str, Any] | _Failed | None:
    """The step's own outcome, before any fallback."""
    # A recorded step was started once its needs were settled: they need no second look.
    recorded = None if isinstance(step.does, Loop) else states.get(key)
    if recorded is not None:
        return _from_record(recorded)
    if not settled.keys() >= step.needs:
        return None
    if step.when is not None and not step.when.holds(context):
        return {"output": None}
    if isinstance(step.does, Loop):
        return _run_loop(step, step.does, key, context, states, starts)
    if isinstance(step.does, PlanCall):
        starts.append(_ask_plan(key, step.name, step.does, context))
        return None
    starts.append(_start(key, step.name, step.does, context))
    return None


def _from_record(recorded: StepState) -> dict[str, Any] | _Failed | None:
    if recorded.state == TaskState.SUCCEEDED:
        return {"output": recorded.output}
    if recorded.state in FAILURES:
        return _Failed(recorded.state, f"{recorded.state}: {recorded.error}" if recorded.error else recorded.state)
    return None


def _fall_back(
    step: DagStep,
    key: str,
    failure: _Failed,
    context: Mapping[str, Any],
    states: Mapping[str, StepState],
    starts: list[Start],
) -> dict[str, Any] | _Failed | None:
    """The fallback's entry, or None while it runs, or the failure that stands."""
    if step.fallback is None or failure.state == TaskState.CANCELLED:
        return failure
    recorded = states.get(key + _FALLBACK)
    if recorded is None:
        starts.append(_start(key + _FALLBACK, step.name + _FALLBACK, step.fallback, context))
        return None
    result = _from_record(recorded)
    if isinstance(result, _Failed):
        return _Failed(result.state, f"{failure.detail}; its fallback {result.detail}")
    return result


def _start(key: str, name: str, call: Call, context: Mapping[str, Any]) -> Start:
    try:
        rendered = call.input.render(context)
    except PathError as exc:
        raise _InputError(f"step {name!r} input: {exc}") from None
    return Start(key, name, ToolCall(call.tool.name, call.tool.version, call.queue, rendered, call.tool.agent))


def _ask_plan(key: str, name: str, plan: PlanCall, context: Mapping[str, Any]) -> Start:
    try:
        return Start(key, name, plan.ask(context))
    except PathError as exc:
        raise _InputError(f"step {name!r} input: {exc}") from None


def _run_loop(
    step: DagStep,
    loop: Loop,
    key: str,
    context: Mapping[str, Any],
    states: Mapping[str, StepState],
    starts: list[Start],
) -> dict[str, Any] | _Failed | None:
    """Replay the iterations recorded so far: the loop's entry, or None while one runs, or its failure."""
    previous: dict[str, Any] = {step.name: {"output": None}}
    for i in range(1, loop.max_iterations + 1):
        settled: dict[str, Any] = {}
        inner = {"input": context["input"], "steps": ChainMap(settled, previous, context["steps"])}
        try:
            error = _advance_all(loop.steps, f"{key}#{i}/", inner, settled, states, starts)
        except _InputError as exc:
            raise _InputError(f"step {step.name!r} failed in iteration {i}: {exc}") from None
        if error is not None:
            return _Failed(TaskState.FAILED, f"failed in iteration {i}: {error}")
        if len(settled) < len(loop.steps):
            return None
        output = {"output": {name: entry["output"] for name, entry in settled.items()}}
        if loop.until.holds(inner):
            return output
        previous = {step.name: output}
    return _Failed(TaskState.FAILED, f"did not converge after {loop.max_iterations} iterations")


# --- checking -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    """A step as read from the document; None where a field is missing or invalid.

    reads: (field, step name) of every step output that the step's input, condition and fallback read.
    """

    field: str
    name: str | None = None
    needs: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (field, step name)
    call: Call | PlanCall | None = None
    loop: _LoopDraft | None = None
    when: Condition | None = None
    continue_on_failure: bool = False
    fallback: Call | None = None
    reads: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    info: StepInfo | None = None


@dataclass(slots=True)
class _LoopDraft:
    """A loop as read from the document; ``scope`` is set once its steps' needs are resolved."""

    field: str
    steps: list[_Draft]
    until: Condition | None
    until_reads: list[tuple[str, str]]
    max_iterations: int | None
    scope: _Scope | None = None


def parse_dag(doc: Mapping[str, Any]) -> DagWorkflow:
    """Check a DAG workflow document; raises WorkflowInvalid with every problem found."""
    problems: list[SpecProblem] = []
    drafts = [_read_step(f"steps[{i}]", raw, problems) for i, raw in enumerate(_read_steps(doc, "steps", problems))]
    homes = _register_names(drafts, problems)
    top = _resolve_scope(drafts, None, homes, problems)
    for i, draft in enumerate(drafts):
        if draft.loop is not None:
            draft.loop.scope = _resolve_scope(draft.loop.steps, (top, i), homes, problems)
    _check_reads(top, homes, problems)
    output = _read_output(doc, top, homes, problems)
    if problems or output is None:
        raise WorkflowInvalid(problems)
    infos = {info.name: info for draft in drafts for info in _infos(draft)}
    return DagWorkflow(_build(top), output, infos)


def _read_steps(raw: Mapping[str, Any], field: str, problems: list[SpecProblem]) -> list[Any]:
    steps = raw.get("steps")
    if not isinstance(steps, list):
        detail = "required" if steps is None else "must be a list of steps"
        problems.append(SpecProblem(field, detail))
        return []
    if not steps:
        problems.append(SpecProblem(field, "must have at least one step"))
    return steps


def _read_step(field: str, raw: Any, problems: list[SpecProblem], *, in_loop: bool = False) -> _Draft:
    draft = _Draft(field)
    if not isinstance(raw, Mapping):
        problems.append(SpecProblem(field, "a step must be a mapping"))
        return draft
    is_loop = "loop" in raw
    keys, what = (_LOOP_STEP_KEYS, "a loop step") if is_loop else (_STEP_KEYS, "a step")
    check_keys(raw, keys, field, what, problems)
    draft.name = read_string(raw, "name", field, _STEP_NAME, problems)
    draft.needs = _read_needs(raw, field, problems)
    draft.when = _read_condition(raw, "when", field, draft.reads, problems)
    draft.continue_on_failure = _read_flag(raw, "continue_on_failure", field, problems)
    if "plan" in raw and not is_loop:
        _read_plan(raw, draft, problems)
    elif not is_loop:
        _read_call(raw, draft, problems)
    elif in_loop:
        problems.append(SpecProblem(f"{field}.loop", "loops do not nest"))
    else:
        draft.loop = _read_loop(raw["loop"], f"{field}.loop", problems)
        draft.fallback = _read_fallback(raw, field, _RUN_INPUT, draft.reads, problems)
        if draft.name is not None:
            draft.info = StepInfo(draft.name, field)
    return draft


def _read_call(raw: Mapping[str, Any], draft: _Draft, problems: list[SpecProblem]) -> None:
    """The fields of a step that calls a tool."""
    field = draft.field
    tool = read_target(raw, field, problems)
    queue = read_string(raw, "queue", field, QUEUE, problems, default="default")
    template = read_template(raw, "input", field, "$.input", problems)
    draft.reads.extend(_template_reads(template))
    if tool is not None and queue is not None and template is not None:
        draft.call = Call(tool, queue, template)
    draft.fallback = _read_fallback(raw, field, template, draft.reads, problems)
    retry = read_retry(raw, field, problems)
    compensate = read_compensation(raw, field, draft.name, problems)
    if draft.name is not None:
        draft.info = StepInfo(draft.name, field, tool, retry, compensate)


def _read_plan(raw: Mapping[str, Any], draft: _Draft, problems: list[SpecProblem]) -> None:
    """The fields of a plan step: ``plan: {agent, goal, tools, agents}`` and the plan's ``input``."""
    field = draft.field
    for key in ("tool", "agent", "queue", "retry"):
        if key in raw:
            problems.append(SpecProblem(f"{field}.{key}", "a plan step runs the plan its agent makes, not a call"))
    read = read_plan(raw, field, problems)
    if read is None:
        return
    draft.reads.extend(_template_reads(read.goal))
    draft.reads.extend(_template_reads(read.input))
    draft.call = read.call
    draft.fallback = _read_fallback(raw, field, read.input, draft.reads, problems)
    compensate = read_compensation(raw, field, draft.name, problems)
    if draft.name is not None:
        draft.info = StepInfo(draft.name, field, read.planner, None, compensate, read.uses)


def _read_needs(raw: Mapping[str, Any], field: str, problems: list[SpecProblem]) -> list[tuple[str, str]]:
    needs = raw.get("needs")
    if needs is None:
        return []
    if not isinstance(needs, list):
        problems.append(SpecProblem(f"{field}.needs", "must be a list of step names"))
        return []
    read: list[tuple[str, str]] = []
    for j, need in enumerate(needs):
        if isinstance(need, str):
            read.append((f"{field}.needs[{j}]", need))
        else:
            problems.append(SpecProblem(f"{field}.needs[{j}]", "must be a step name"))
    return read


def _read_condition(
    raw: Mapping[str, Any], key: str, field: str, reads: list[tuple[str, str]], problems: list[SpecProblem]
) -> Condition | None:
    """The condition at ``raw[key]``, None if absent; the steps it reads are added to ``reads``."""
    text = raw.get(key)
    if text is None:
        return None
    field = f"{field}.{key}"
    try:
        condition = compile_condition(text, field)
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
        return None
    reads.extend((field, path.step) for path in condition.paths if path.step is not None)
    return condition


def _read_flag(raw: Mapping[str, Any], key: str, field: str, problems: list[SpecProblem]) -> bool:
    value = raw.get(key, False)
    if isinstance(value, bool):
        return value
    problems.append(SpecProblem(f"{field}.{key}", f"must be true or false, not {value!r}"))
    return False


def _template_reads(template: Template | None) -> list[tuple[str, str]]:
    if template is None:
        return []
    return [(field, path.step) for field, path in template.paths if path.step is not None]


def _read_fallback(
    raw: Mapping[str, Any],
    field: str,
    step_input: Template | None,
    reads: list[tuple[str, str]],
    problems: list[SpecProblem],
) -> Call | None:
    """``fallback: {tool, queue, input}``, its input the step's own unless it has one."""
    call = read_call(raw, "fallback", field, "a fallback", problems)
    if call is None:
        return None
    spec, field, tool, queue = call
    template = step_input
    if "input" in spec:
        template = read_template(spec, "input", field, None, problems)
        reads.extend(_template_reads(template))
    if tool is None or queue is None or template is None:
        return None
    return Call(tool, queue, template)


def _read_loop(spec: Any, field: str, problems: list[SpecProblem]) -> _LoopDraft | None:
    if not isinstance(spec, Mapping):
        problems.append(SpecProblem(field, "must be a mapping with steps, until and max_iterations"))
        return None
    check_keys(spec, _LOOP_KEYS, field, "a loop", problems)
    steps = [
        _read_step(f"{field}.steps[{j}]", raw, problems, in_loop=True)
        for j, raw in enumerate(_read_steps(spec, f"{field}.steps", problems))
    ]
    until_reads: list[tuple[str, str]] = []
    until = _read_condition(spec, "until", field, until_reads, problems)
    for key in ("until", "max_iterations"):
        if spec.get(key) is None:
            problems.append(SpecProblem(f"{field}.{key}", "required"))
    maximum = read_number(spec, "max_iterations", field, problems, minimum=1, integer=True)
    return _LoopDraft(field, steps, until, until_reads, None if maximum is None else int(maximum))


def _register_names(drafts: list[_Draft], problems: list[SpecProblem]) -> dict[str, tuple[_Draft, str | None]]:
    """Each step name, in document order, with its first draft and the loop it is in (None: none)."""
    homes: dict[str, tuple[_Draft, str | None]] = {}

    def register(draft: _Draft, loop: str | None) -> None:
        if draft.name is None:
            return
        if draft.name in homes:
            problems.append(
                SpecProblem(f"{draft.field}.name", f"{draft.name!r} is already {homes[draft.name][0].field}")
            )
        else:
            homes[draft.name] = (draft, loop)

    for draft in drafts:
        register(draft, None)
        if draft.loop is not None:
            for sub in draft.loop.steps:
                register(sub, draft.name or draft.field)
    return homes


@dataclass(slots=True)
class _Scope:
    """The steps of the workflow, or of one loop, with their needs resolved to indexes among them.

    ancestors: for each step, a bit set of the steps it needs directly or not; None when the needs form
        a cycle (already reported), which makes ancestry meaningless.
    parent: for a loop's steps, the scope of the loop step and its index there.
    """

    drafts: list[_Draft]
    index_of: dict[str, int]
    needs: list[list[int]]
    order: list[int]
    ancestors: list[int] | None
    parent: tuple[_Scope, int] | None

    def label(self, i: int) -> str:
        return self.drafts[i].name or self.drafts[i].field


def _resolve_scope(
    drafts: list[_Draft],
    parent: tuple[_Scope, int] | None,
    homes: Mapping[str, tuple[_Draft, str | None]],
    problems: list[SpecProblem],
) -> _Scope:
    index_of = {draft.name: i for i, draft in enumerate(drafts) if draft.name and homes[draft.name][0] is draft}
    loop = None if parent is None else parent[0].drafts[parent[1]].name
    needs = [_resolve_needs(draft, index_of, loop, homes, problems) for draft in drafts]
    order, cycles = _topological_order(needs)
    scope = _Scope(drafts, index_of, needs, order, None if cycles else _ancestors(order, needs), parent)
    for cycle in cycles:
        chain = " -> ".join(scope.label(i) for i in [*cycle, cycle[0]])
        problems.append(SpecProblem(f"{drafts[cycle[0]].field}.needs", f"the needs form a cycle: {chain}"))
    return scope


def _resolve_needs(
    draft: _Draft,
    index_of: Mapping[str, int],
    loop: str | None,
    homes: Mapping[str, tuple[_Draft, str | None]],
    problems: list[SpecProblem],
) -> list[int]:
    """The indexes of the steps ``draft`` needs; what cannot be resolved is reported and left out."""
    resolved: list[int] = []
    for field, name in draft.needs:
        if name == draft.name:
            problems.append(SpecProblem(field, "a step cannot need itself"))
        elif name not in index_of:
            problems.append(SpecProblem(field, _not_a_sibling(name, loop, homes)))
        elif index_of[name] in resolved:
            problems.append(SpecProblem(field, f"{name!r} is listed twice"))
        else:
            resolved.append(index_of[name])
    return resolved


def _not_a_sibling(name: str, loop: str | None, homes: Mapping[str, tuple[_Draft, str | None]]) -> str:
    """Why a step (in ``loop``, or None) cannot need the step ``name``, which is not among its siblings."""
    if name not in homes:
        return f"unknown step {name!r}"
    if name == loop:
        return "a step cannot need the loop it is in"
    home = homes[name][1]
    if home is not None:
        return f"{name!r} is a step of loop {home!r}, seen from outside only through its output"
    return f"{name!r} is outside loop {loop!r}; the loop step must need it"


def _topological_order(needs: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Every step index, needs first and ties in document order; and the cycles met, in running order.

    A cycle found is broken by placing all its steps, so that the steps after it, and any further
    cycle, are still reached.
    """
    dependents: list[list[int]] = [[] for _ in needs]
    for i, step_needs in enumerate(needs):
        for need in step_needs:
            dependents[need].append(i)
    waiting_on = [len(step_needs) for step_needs in needs]
    ready = [i for i, count in enumerate(waiting_on) if count == 0]
    placed = [False] * len(needs)
    order: list[int] = []
    cycles: list[list[int]] = []

    def place(steps: list[int]) -> None:
        for i in steps:
            placed[i] = True
        order.extend(steps)
        for i in steps:
            for dependent in dependents[i]:
                waiting_on[dependent] -= 1
                if waiting_on[dependent] == 0 and not placed[dependent]:
                    heapq.heappush(ready, dependent)

    while True:
        while ready:
            place([heapq.heappop(ready)])
        if len(order) == len(needs):
            return order, cycles
        # Every unplaced step waits on an unplaced need, so walking up the needs must come back round.
        walk = [placed.index(False)]
        while walk[-1] not in walk[:-1]:
            walk.append(next(need for need in needs[walk[-1]] if not placed[need]))
        cycle = walk[walk.index(walk[-1]) : -1][::-1]
        start = cycle.index(min(cycle))
        cycle = cycle[start:] + cycle[:start]
        cycles.append(cycle)
        place(cycle)


def _ancestors(order: list[int], needs: list[list[int]]) -> list[int]:
    """For each step, a bit set of the steps it needs directly or through other needs."""
    ancestors = [0] * len(needs)
    for i in order:
        for need in needs[i]:
            ancestors[i] |= ancestors[need] | 1 << need
    return ancestors


def _check_reads(scope: _Scope, homes: Mapping[str, tuple[_Draft, str | None]], problems: list[SpecProblem]) -> None:
    """Report each step output read that the reader may not read (see the module docstring)."""
    for i, draft in enumerate(scope.drafts):
        for field, name in draft.reads:
            _check_read(scope, i, field, name, homes, problems)
        if draft.loop is not None and draft.loop.scope is not None:
            _check_reads(draft.loop.scope, homes, problems)
            for field, name in draft.loop.until_reads:
                _check_read(draft.loop.scope, None, field, name, homes, problems)


def _check_read(
    scope: _Scope,
    reader: int | None,
    field: str,
    name: str,
    homes: Mapping[str, tuple[_Draft, str | None]],
    problems: list[SpecProblem],
) -> None:
    """Report a read of ``name`` at ``field`` by the step ``reader`` of ``scope``, if it may not read it.

    reader None: what reads every step of the scope, the workflow's output or a loop's ``until``.
    """
    where = scope.index_of.get(name)
    if where is not None:
        if reader is None:
            return
        if where == reader:
            problems.append(SpecProblem(field, "a step cannot read its own output"))
        elif scope.ancestors is not None and not scope.ancestors[reader] >> where & 1:
            label = scope.label(reader)
            problems.append(SpecProblem(field, f"step {name!r} is not among the needs of {label!r}, nor theirs"))
        return
    if scope.parent is not None:
        # Inside a loop, the loop itself reads as the previous iteration; the rest as the loop step would.
        outer, loop = scope.parent
        if name != outer.drafts[loop].name:
            _check_read(outer, loop, field, name, homes, problems)
        return
    home = homes[name][1] if name in homes else None
    if home is None:
        problems.append(SpecProblem(field, f"unknown step {name!r}"))
    else:
        problems.append(
            SpecProblem(field, f"step {name!r} is a step of loop {home!r}; read it as $.steps.{home}.output.{name}")
        )


def _read_output(
    doc: Mapping[str, Any],
    top: _Scope,
    homes: Mapping[str, tuple[_Draft, str | None]],
    problems: list[SpecProblem],
) -> Template | None:
    raw = doc.get("output")
    if raw is None:
        needed = {need for step_needs in top.needs for need in step_needs}
        sinks = [draft.name for i, draft in enumerate(top.drafts) if i not in needed and draft.name]
        raw = f"$.steps.{sinks[0]}.output" if len(sinks) == 1 else {sink: f"$.steps.{sink}.output" for sink in sinks}
    try:
        output = compile_template(raw, "output")
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
        return None
    for field, path in output.paths:
        if path.step is not None:
            _check_read(top, None, field, path.step, homes, problems)
    return output


def _build(scope: _Scope) -> tuple[DagStep, ...]:
    """The checked steps of a scope without problems, in topological order."""
    steps: list[DagStep] = []
    for i in scope.order:
        draft = scope.drafts[i]
        does: Call | Loop | PlanCall | None = draft.call
        if draft.loop is not None:
            loop = draft.loop
            assert loop.scope and loop.until and loop.max_iterations, "no problem, so complete"
            does = Loop(_build(loop.scope), loop.until, loop.max_iterations)
        assert draft.name and does, "no problem, so complete"
        needs = frozenset(name for _, name in draft.needs)
        steps.append(DagStep(draft.name, needs, does, draft.when, draft.continue_on_failure, draft.fallback))
    return tuple(steps)


def _infos(draft: _Draft) -> list[StepInfo]:
    """What the control plane needs of the step, its fallback and the steps of its loop."""
    assert draft.info, "no problem, so complete"
    infos = [draft.info]
    if draft.fallback is not None:
        infos.append(StepInfo(draft.info.name + _FALLBACK, f"{draft.field}.fallback", draft.fallback.tool))
    if draft.loop is not None:
        infos.extend(info for sub in draft.loop.steps for info in _infos(sub))
    return infos
