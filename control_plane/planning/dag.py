"""The DAG planner: a workflow of steps that each start once all the steps they need have succeeded.

``parse_dag`` checks a workflow document once, when it is applied; ``decide`` is then a pure function of
(workflow, run input, recorded step states), called on every result, linear in steps plus needs.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from control_plane.planning.paths import PathError, Template, compile_template
from control_plane.planning.problems import SpecProblem, WorkflowInvalid, child_field

_NAME = "[a-z0-9][a-z0-9_-]{0,62}"
_QUEUE = "[a-z0-9][a-z0-9-]{0,62}"
_VERSION = "[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}"
# (compiled pattern, what to say when a value does not match it)
_STEP_NAME_SHAPE = (re.compile(_NAME), f"a step name matching ^{_NAME}$")
_QUEUE_SHAPE = (re.compile(_QUEUE), f"a queue name matching ^{_QUEUE}$")
_TOOL_SHAPE = (
    re.compile(f"{_NAME}(?:@{_VERSION})?"),
    f"a tool as name@version or name, the name matching ^{_NAME}$ and the version ^{_VERSION}$",
)
# "retry" overrides the tool's retry policy; the control plane reads and validates it, planning ignores it.
_STEP_KEYS = ("name", "tool", "queue", "needs", "input", "retry")
_FAILURES = frozenset({"failed", "cancelled", "dead"})
_STATES = frozenset({"queued", "running", "succeeded"}) | _FAILURES


@dataclass(frozen=True, slots=True)
class DagStep:
    """One step of a DAG workflow.

    name: unique within the workflow.
    tool, tool_version: the tool it calls; version None until the control plane pins the latest.
    queue: the task queue its tasks go to.
    needs: the steps that must succeed before it starts.
    input: the template its input is rendered from.
    """

    name: str
    tool: str
    tool_version: str | None
    queue: str
    needs: tuple[str, ...]
    input: Template


@dataclass(frozen=True, slots=True)
class DagWorkflow:
    """A checked DAG workflow.

    steps: in topological order; steps free to go in either order keep their document order.
    output: the template of the run's output (the default one when the document gives none).
    """

    steps: tuple[DagStep, ...]
    output: Template
    # Each step with its needs as a set, which decide compares with the succeeded steps in one C call.
    _needs: tuple[tuple[DagStep, frozenset[str]], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_needs", tuple((step, frozenset(step.needs)) for step in self.steps))

    def tool_refs(self) -> set[tuple[str, str | None]]:
        """(tool name, version or None) of every tool the workflow calls."""
        return {(step.tool, step.tool_version) for step in self.steps}


@dataclass(slots=True)
class _Draft:
    """A step as read from the document; None where a field is missing or invalid."""

    field: str
    name: str | None = None
    tool: str | None = None
    queue: str | None = None
    needs: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (field, step name)
    input: Template | None = None


def parse_dag(doc: Mapping[str, Any]) -> DagWorkflow:
    """Check a DAG workflow document; raises WorkflowInvalid with every problem found."""
    problems: list[SpecProblem] = []
    drafts = [_read_step(f"steps[{i}]", raw, problems) for i, raw in enumerate(_read_steps(doc, problems))]
    labels = [draft.name or draft.field for draft in drafts]

    index_of: dict[str, int] = {}
    for i, draft in enumerate(drafts):
        if draft.name is None:
            continue
        if draft.name in index_of:
            problems.append(
                SpecProblem(f"{draft.field}.name", f"{draft.name!r} is already steps[{index_of[draft.name]}]")
            )
        else:
            index_of[draft.name] = i

    needs = [_resolve_needs(draft, index_of, problems) for draft in drafts]
    order, cycles = _topological_order(needs)
    for cycle in cycles:
        chain = " -> ".join(labels[i] for i in [*cycle, cycle[0]])
        problems.append(SpecProblem(f"{drafts[cycle[0]].field}.needs", f"the needs form a cycle: {chain}"))

    # With a cycle, ancestry is meaningless until the needs are fixed; the cycle is reported already.
    ancestors = None if cycles else _ancestors(order, needs)
    for i, draft in enumerate(drafts):
        if draft.input:
            _check_reads(i, draft.input, labels, index_of, ancestors, problems)

    output = _read_output(doc, drafts, needs, index_of, problems)
    if problems or output is None:
        raise WorkflowInvalid(problems)
    steps = []
    for i in order:
        draft = drafts[i]
        assert draft.name and draft.tool and draft.queue and draft.input, "no problem, so complete"
        tool, _, version = draft.tool.partition("@")
        step_needs = tuple(name for _, name in draft.needs)
        steps.append(DagStep(draft.name, tool, version or None, draft.queue, step_needs, draft.input))
    return DagWorkflow(tuple(steps), output)


def _read_steps(doc: Mapping[str, Any], problems: list[SpecProblem]) -> list[Any]:
    steps = doc.get("steps")
    if not isinstance(steps, list):
        detail = "required" if steps is None else "must be a list of steps"
        problems.append(SpecProblem("steps", detail))
        return []
    if not steps:
        problems.append(SpecProblem("steps", "must have at least one step"))
    return steps


def _read_step(field: str, raw: Any, problems: list[SpecProblem]) -> _Draft:
    draft = _Draft(field)
    if not isinstance(raw, Mapping):
        problems.append(SpecProblem(field, "a step must be a mapping"))
        return draft
    for key in raw:
        if key not in _STEP_KEYS:
            problems.append(
                SpecProblem(child_field(field, str(key)), f"unknown key; a step has {', '.join(_STEP_KEYS)}")
            )
    draft.name = _read_string(raw, "name", field, _STEP_NAME_SHAPE, problems)
    draft.tool = _read_string(raw, "tool", field, _TOOL_SHAPE, problems)
    draft.queue = _read_string(raw, "queue", field, _QUEUE_SHAPE, problems, default="default")

    needs = raw.get("needs")
    if isinstance(needs, list):
        for j, need in enumerate(needs):
            if isinstance(need, str):
                draft.needs.append((f"{field}.needs[{j}]", need))
            else:
                problems.append(SpecProblem(f"{field}.needs[{j}]", "must be a step name"))
    elif needs is not None:
        problems.append(SpecProblem(f"{field}.needs", "must be a list of step names"))

    try:
        draft.input = compile_template(raw.get("input", "$.input"), f"{field}.input")
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
    return draft


def _read_string(
    raw: Mapping[str, Any],
    key: str,
    field: str,
    shape: tuple[re.Pattern[str], str],
    problems: list[SpecProblem],
    default: str | None = None,
) -> str | None:
    value = raw.get(key)
    if value is None:
        value = default
    if value is None:
        problems.append(SpecProblem(f"{field}.{key}", "required"))
    elif not isinstance(value, str) or not shape[0].fullmatch(value):
        problems.append(SpecProblem(f"{field}.{key}", f"must be {shape[1]}, not {value!r}"))
    else:
        return value
    return None


def _resolve_needs(draft: _Draft, index_of: Mapping[str, int], problems: list[SpecProblem]) -> list[int]:
    """The indexes of the steps ``draft`` needs; what cannot be resolved is reported and left out."""
    resolved: list[int] = []
    for field, name in draft.needs:
        if name == draft.name:
            problems.append(SpecProblem(field, "a step cannot need itself"))
        elif name not in index_of:
            problems.append(SpecProblem(field, f"unknown step {name!r}"))
        elif index_of[name] in resolved:
            problems.append(SpecProblem(field, f"{name!r} is listed twice"))
        else:
            resolved.append(index_of[name])
    return resolved


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


def _check_reads(
    i: int,
    template: Template,
    labels: list[str],
    index_of: Mapping[str, int],
    ancestors: list[int] | None,
    problems: list[SpecProblem],
) -> None:
    """Report each path of step ``i``'s input that reads a step it does not need, directly or not."""
    for field, path in template.paths:
        step = path.step
        if step is None:
            continue
        if step not in index_of:
            problems.append(SpecProblem(field, f"unknown step {step!r}"))
        elif index_of[step] == i:
            problems.append(SpecProblem(field, "a step cannot read its own output"))
        elif ancestors is not None and not ancestors[i] >> index_of[step] & 1:
            problems.append(SpecProblem(field, f"step {step!r} is not among the needs of {labels[i]!r}, nor theirs"))


def _ancestors(order: list[int], needs: list[list[int]]) -> list[int]:
    """For each step, a bit set of the steps it needs directly or through other needs."""
    ancestors = [0] * len(needs)
    for i in order:
        for need in needs[i]:
            ancestors[i] |= ancestors[need] | 1 << need
    return ancestors


def _read_output(
    doc: Mapping[str, Any],
    drafts: list[_Draft],
    needs: list[list[int]],
    index_of: Mapping[str, int],
    problems: list[SpecProblem],
) -> Template | None:
    raw = doc.get("output")
    if raw is None:
        needed = {need for step_needs in needs for need in step_needs}
        sinks = [draft.name for i, draft in enumerate(drafts) if i not in needed and draft.name]
        raw = f"$.steps.{sinks[0]}.output" if len(sinks) == 1 else {sink: f"$.steps.{sink}.output" for sink in sinks}
    try:
        output = compile_template(raw, "output")
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
        return None
    for field, path in output.paths:
        if path.step is not None and path.step not in index_of:
            problems.append(SpecProblem(field, f"unknown step {path.step!r}"))
    return output


@dataclass(frozen=True, slots=True)
class StepState:
    """What is recorded of one step of a run.

    state: "queued", "running", "succeeded", "failed", "cancelled" or "dead" (attempts exhausted).
    output: its output, once succeeded.
    error: why it did not succeed.
    """

    state: str
    output: Any = None
    error: str | None = None

    def __post_init__(self) -> None:
        if self.state not in _STATES:
            raise ValueError(f"unknown step state {self.state!r}")


@dataclass(frozen=True, slots=True)
class StepStart:
    """A step to start now, with its rendered input."""

    step: DagStep
    input: Any


@dataclass(frozen=True, slots=True)
class StepInputError:
    """A step whose input could not be rendered; the run fails with it."""

    step: str
    detail: str


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a finished run ended: its output when it succeeded, its error when it failed."""

    state: Literal["succeeded", "failed"]
    output: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after the states recorded so far.

    start: the steps to start now.
    outcome: set once the run is finished.
    input_error: the step, if any, that made the run fail because its input could not be rendered;
        it has no recorded state, so the control plane records this against it.
    """

    start: tuple[StepStart, ...]
    outcome: RunOutcome | None
    input_error: StepInputError | None = None


def decide(wf: DagWorkflow, run_input: Any, states: Mapping[str, StepState]) -> Decision:
    """The next move of a run of ``wf``, given the state recorded for each step that has one."""
    succeeded: dict[str, dict[str, Any]] = {}
    ready: list[DagStep] = []
    for step, needs in wf._needs:
        recorded = states.get(step.name)
        if recorded is None:
            # Steps come in topological order, so all of a step's needs have been looked at already.
            if succeeded.keys() >= needs:
                ready.append(step)
        elif recorded.state == "succeeded":
            succeeded[step.name] = {"output": recorded.output}
        elif recorded.state in _FAILURES:
            reason = f": {recorded.error}" if recorded.error else ""
            return _failed(f"step {step.name!r} {recorded.state}{reason}")

    context = {"input": run_input, "steps": succeeded}
    if len(succeeded) == len(wf.steps):
        try:
            return Decision((), RunOutcome("succeeded", wf.output.render(context), None))
        except PathError as exc:
            return _failed(f"output: {exc}")
    starts: list[StepStart] = []
    for step in ready:
        try:
            starts.append(StepStart(step, step.input.render(context)))
        except PathError as exc:
            return _failed(f"step {step.name!r} input: {exc}", StepInputError(step.name, str(exc)))
    return Decision(tuple(starts), None)


def _failed(error: str, input_error: StepInputError | None = None) -> Decision:
    return Decision((), RunOutcome("failed", None, error), input_error)
