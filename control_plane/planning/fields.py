"""Reading the fields every kind of workflow shares: names, tools, queues, numbers, retry policies,
compensations and plan steps. Each reader reports what is wrong as a SpecProblem at the exact field and
returns None."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.planning.model import Compensation, MakePlan, ToolRef
from control_plane.planning.paths import Template, compile_template
from control_plane.planning.problems import SpecProblem, WorkflowInvalid, child_field

_NAME = "[a-z0-9][a-z0-9_-]{0,62}"
_QUEUE = "[a-z0-9][a-z0-9-]{0,62}"
_VERSION = "[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}"


DOCUMENT_KEYS = ("name", "version", "kind", "description", "input_schema")
"""Top-level keys every kind of workflow has; the control plane checks them, the planners only allow them."""


class Shape:
    """A pattern a string field must match, and how to say so when it does not."""

    def __init__(self, pattern: str, description: str) -> None:
        self.pattern = re.compile(pattern)
        self.description = description


NAME = Shape(_NAME, f"a name matching ^{_NAME}$")
QUEUE = Shape(_QUEUE, f"a queue name matching ^{_QUEUE}$")
TOOL = Shape(
    f"{_NAME}(?:@{_VERSION})?",
    f"a tool as name@version or name, the name matching ^{_NAME}$ and the version ^{_VERSION}$",
)
SIGNAL = Shape(_NAME, f"a signal name matching ^{_NAME}$")


def check_keys(
    raw: Mapping[str, Any], allowed: tuple[str, ...], field: str, what: str, problems: list[SpecProblem]
) -> None:
    """Report every key of ``raw`` not in ``allowed``."""
    for key in raw:
        if key not in allowed:
            problems.append(SpecProblem(child_field(field, str(key)), f"unknown key; {what} has {', '.join(allowed)}"))


def read_string(
    raw: Mapping[str, Any],
    key: str,
    field: str,
    shape: Shape,
    problems: list[SpecProblem],
    default: str | None = None,
) -> str | None:
    """``raw[key]`` (or ``default``) when it is a string of the right shape; else reported as a problem."""
    value = raw.get(key)
    if value is None:
        value = default
    if value is None:
        problems.append(SpecProblem(f"{field}.{key}", "required"))
    elif not isinstance(value, str) or not shape.pattern.fullmatch(value):
        problems.append(SpecProblem(f"{field}.{key}", f"must be {shape.description}, not {value!r}"))
    else:
        return value
    return None


def read_tool(raw: Mapping[str, Any], key: str, field: str, problems: list[SpecProblem]) -> ToolRef | None:
    """The tool named by ``raw[key]`` as ``name`` or ``name@version``."""
    text = read_string(raw, key, field, TOOL, problems)
    if text is None:
        return None
    name, _, version = text.partition("@")
    return ToolRef(f"{field}.{key}", name, version or None)


def read_target(raw: Mapping[str, Any], field: str, problems: list[SpecProblem]) -> ToolRef | None:
    """What an element calls: ``tool: name[@version]``, or ``agent: name[@version]`` to run an agent there."""
    if "agent" not in raw:
        return read_tool(raw, "tool", field, problems)
    if "tool" in raw:
        problems.append(SpecProblem(f"{field}.agent", "an element calls a tool or runs an agent, not both"))
        return None
    ref = read_tool(raw, "agent", field, problems)
    return None if ref is None else ToolRef(ref.field, ref.name, ref.version, agent=True)


def read_number(
    raw: Mapping[str, Any], key: str, field: str, problems: list[SpecProblem], *, minimum: float, integer: bool = False
) -> float | None:
    """``raw[key]`` when it is a number (an integer if ``integer``) of at least ``minimum``; None if absent."""
    value = raw.get(key)
    if value is None:
        return None
    wanted = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or value < minimum:
        problems.append(SpecProblem(f"{field}.{key}", f"must be {wanted} >= {minimum:g}, not {value!r}"))
        return None
    return value


def read_template(
    raw: Mapping[str, Any],
    key: str,
    field: str,
    default: Any,
    problems: list[SpecProblem],
    *,
    missing_is_null: bool = False,
) -> Template | None:
    try:
        return compile_template(raw.get(key, default), f"{field}.{key}", missing_is_null=missing_is_null)
    except WorkflowInvalid as exc:
        problems.extend(exc.problems)
        return None


def read_retry(raw: Mapping[str, Any], field: str, problems: list[SpecProblem]) -> Mapping[str, Any] | None:
    """The element's own retry policy, as written (the control plane checks its fields)."""
    retry = raw.get("retry")
    if retry is not None and not isinstance(retry, Mapping):
        problems.append(SpecProblem(f"{field}.retry", "must be a retry policy (a mapping)"))
        return None
    return retry


CALL_KEYS = ("tool", "queue", "input")


def read_call(
    raw: Mapping[str, Any], key: str, field: str, what: str, problems: list[SpecProblem]
) -> tuple[Mapping[str, Any], str, ToolRef | None, str | None] | None:
    """``raw[key]`` as ``{tool, queue, input}`` (a fallback or a compensation): the mapping, its field, and its
    tool and queue; ``None`` when absent or not a mapping. The caller reads ``input``, whose default differs."""
    spec = raw.get(key)
    if spec is None:
        return None
    field = f"{field}.{key}"
    if not isinstance(spec, Mapping):
        problems.append(SpecProblem(field, "must be a mapping with tool, and optionally queue and input"))
        return None
    check_keys(spec, CALL_KEYS, field, what, problems)
    tool = read_tool(spec, "tool", field, problems)
    queue = read_string(spec, "queue", field, QUEUE, problems, default="default")
    return spec, field, tool, queue


def read_compensation(
    raw: Mapping[str, Any], field: str, name: str | None, problems: list[SpecProblem]
) -> Compensation | None:
    """``compensate: {tool, queue, input}``: what undoes element ``name``. Its input is rendered (saga.py)
    with no step output but the element's own, so it may read only that and the run input."""
    call = read_call(raw, "compensate", field, "a compensation", problems)
    if call is None:
        return None
    spec, field, tool, queue = call
    template = read_template(spec, "input", field, "$.input", problems)
    for path_field, path in template.paths if template is not None and name is not None else ():
        if path.step is not None and path.step != name:
            problems.append(
                SpecProblem(path_field, f"a compensation reads only $.input and the output of {name!r} it undoes")
            )
    if tool is None or queue is None or template is None:
        return None
    return Compensation(tool, queue, template)


def read_signals(raw: Mapping[str, Any], field: str, problems: list[SpecProblem]) -> tuple[str, ...] | None:
    """``raw["signals"]``: a non-empty list of distinct signal names, reported at ``<field>.signals``."""
    signals_field = f"{field}.signals"
    value = raw.get("signals")
    if not isinstance(value, list) or not value:
        detail = "required" if value is None else "must be a list of signal names, with at least one"
        problems.append(SpecProblem(signals_field, detail))
        return None
    signals: list[str] = []
    for i, signal in enumerate(value):
        if not isinstance(signal, str) or not SIGNAL.pattern.fullmatch(signal):
            problems.append(SpecProblem(f"{signals_field}[{i}]", f"must be {SIGNAL.description}, not {signal!r}"))
        elif signal in signals:
            problems.append(SpecProblem(f"{signals_field}[{i}]", f"{signal!r} is listed twice"))
        else:
            signals.append(signal)
    return tuple(signals) if len(signals) == len(value) else None


PLAN_KEYS = ("agent", "goal", "tools", "agents")


@dataclass(frozen=True, slots=True)
class PlanCall:
    """A plan step (a DAG step, an FSM state or a BT leaf with ``plan:``; ``planner.PlanSteps`` runs it): its
    planning agent, its goal and the plan's input (rendered when it starts), and the tools and agents the
    plan may use."""

    planner: ToolRef
    goal: Template
    input: Template
    tools: tuple[ToolRef, ...]
    agents: tuple[ToolRef, ...]

    def ask(self, context: Mapping[str, Any]) -> MakePlan:
        """What the step asks for, its goal and input rendered in ``context`` (raises PathError)."""
        return MakePlan(self.planner, self.goal.render(context), self.input.render(context), self.tools, self.agents)


@dataclass(frozen=True, slots=True)
class PlanFields:
    """A plan step's fields as read: its call (None when any is invalid), and what the rest of the document is
    checked with whatever else is wrong: the planning agent and what it offers (for the StepInfo), the goal
    and the input (for the paths they read)."""

    call: PlanCall | None
    planner: ToolRef | None
    uses: tuple[ToolRef, ...]
    goal: Template | None
    input: Template | None


def read_plan(
    raw: Mapping[str, Any], field: str, problems: list[SpecProblem], *, missing_is_null: bool = False
) -> PlanFields | None:
    """``plan: {agent, goal, tools, agents}`` and the plan's ``input`` (default ``$.input``) of the element
    at ``field``; ``missing_is_null`` as for its other templates. None when ``plan`` is not even a mapping."""
    spec, where = raw["plan"], f"{field}.plan"
    if not isinstance(spec, Mapping):
        problems.append(SpecProblem(where, "must be a mapping with agent, goal, tools and agents"))
        return None
    check_keys(spec, PLAN_KEYS, where, "a plan", problems)
    ref = read_tool(spec, "agent", where, problems)
    planner = None if ref is None else ToolRef(ref.field, ref.name, ref.version, agent=True)
    goal = None
    if spec.get("goal") is None:
        problems.append(SpecProblem(f"{where}.goal", "required"))
    else:
        goal = read_template(spec, "goal", where, None, problems, missing_is_null=missing_is_null)
    tools = _read_refs(spec, "tools", where, problems)
    agents = _read_refs(spec, "agents", where, problems, agent=True)
    if tools == () and agents == ():
        problems.append(SpecProblem(f"{where}.tools", "a plan needs at least one tool or agent to use"))
    template = read_template(raw, "input", field, "$.input", problems, missing_is_null=missing_is_null)
    call = None
    if planner and goal and template and tools is not None and agents is not None:
        call = PlanCall(planner, goal, template, tools, agents)
    return PlanFields(call, planner, (*(tools or ()), *(agents or ())), goal, template)


def _read_refs(
    spec: Mapping[str, Any], key: str, field: str, problems: list[SpecProblem], *, agent: bool = False
) -> tuple[ToolRef, ...] | None:
    """``spec[key]``: a list of distinct ``name[@version]``; () when absent, None when it has problems."""
    values = spec.get(key, [])
    if not isinstance(values, list):
        problems.append(SpecProblem(f"{field}.{key}", "must be a list of names, each name or name@version"))
        return None
    refs: list[ToolRef] = []
    for j, value in enumerate(values):
        at = f"{field}.{key}[{j}]"
        if not isinstance(value, str) or not TOOL.pattern.fullmatch(value):
            problems.append(SpecProblem(at, f"must be {TOOL.description}, not {value!r}"))
            continue
        name, _, version = value.partition("@")
        if any(ref.name == name for ref in refs):
            problems.append(SpecProblem(at, f"{name!r} is listed twice"))
        refs.append(ToolRef(at, name, version or None, agent))
    return tuple(refs) if len(refs) == len(values) else None
