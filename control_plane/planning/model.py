"""What every planner shares: the recorded state of a run's step instances, the actions a planner asks
for, and the decision it returns.

A planner is a pure function of (workflow, run input, recorded step instances). A step instance is one
execution of one element of the workflow (a DAG step, an FSM state's action, a behavior-tree leaf); it is
known by a key, unique within the run, that the planner derives deterministically (``review`` for the
first, ``review#2`` for a second visit, ``loop#3/review`` inside a loop...): a key, once started, is never
started again, so replaying the same records always gives the same plan and never repeats a task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

from bus.states import FINAL_TASK_STATES, RunState, TaskState
from control_plane.planning.paths import Template

FINISHED = FINAL_TASK_STATES
FAILURES = FINISHED - {TaskState.SUCCEEDED}
STATES = frozenset(TaskState)


@dataclass(frozen=True, slots=True)
class StepState:
    """What is recorded of one step instance of a run.

    state: queued, running, succeeded, failed, cancelled or dead (attempts exhausted): a ``bus.states.TaskState``.
    output: its output, once succeeded.
    error: why it did not succeed.
    step: the workflow element it is an instance of (the key's element; "" where the key is the name).
    """

    state: TaskState
    output: Any = None
    error: str | None = None
    step: str = ""
    input: Any = None
    """Its input, where a planner needs it back: an agent step's (``agent_steps``); None otherwise."""

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown step state {self.state!r}")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """Call a tool, or run an agent (``agent``: ``tool`` names an agent). tool_version None: the version
    pinned when the workflow was applied."""

    tool: str
    tool_version: str | None
    queue: str
    input: Any
    agent: bool = False


@dataclass(frozen=True, slots=True)
class Sleep:
    """A durable timer: the instance succeeds (output ``{"slept_seconds": seconds}``) once it has run out."""

    seconds: float


@dataclass(frozen=True, slots=True)
class AwaitSignal:
    """Wait for one of the named signals: the instance succeeds with output ``{"signal": name, "data": data}``
    when one arrives, or fails with an error starting "timed out" once ``timeout_seconds`` have passed."""

    signals: tuple[str, ...]
    timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class RunAgent:
    """An agent step's own instance (``agent_steps``): kept by the control plane, it records the pinned
    ``name@version`` of the agent and the step's input, from which its loop is rebuilt."""

    agent: str
    input: Any

    def input_record(self) -> dict[str, Any]:
        """What the instance records as its input (and a planner reads back as ``StepState.input``)."""
        return {"agent": self.agent, "input": self.input}


@dataclass(frozen=True, slots=True)
class MakePlan:
    """A plan step as its workflow's planner asks for it (``planner.PlanSteps`` runs it): the planning agent,
    the goal and the input rendered, and the tools and agents the plan may use, as the document names them."""

    planner: ToolRef
    goal: Any
    input: Any
    tools: tuple[ToolRef, ...]
    agents: tuple[ToolRef, ...]


@dataclass(frozen=True, slots=True)
class RunPlan:
    """A plan step's own instance (``planner``): kept by the control plane, it records the pinned planning
    agent and what it was asked, from which the planning loop is rebuilt; settled with the plan's output."""

    planner: str
    input: Any

    def input_record(self) -> dict[str, Any]:
        return {"planner": self.planner, "input": self.input}


@dataclass(frozen=True, slots=True)
class Record:
    """An instance recorded already succeeded with ``output``: what the control plane decided and keeps (a
    plan step's validated plan)."""

    output: Any


Action: TypeAlias = ToolCall | Sleep | AwaitSignal | RunAgent | MakePlan | RunPlan | Record


@dataclass(frozen=True, slots=True)
class Start:
    """A step instance to start now.

    key: unique within the run (see the module docstring).
    step: the element's name, as in ``StepInfo.name``: retry overrides and compensation are looked up by it.
    action: what to do.
    """

    key: str
    step: str
    action: Action


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a finished run ended: its output when it succeeded, its error when it failed."""

    state: Literal[RunState.SUCCEEDED, RunState.FAILED]
    output: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class Settle:
    """An instance the control plane keeps (an agent step) has finished: record it so."""

    key: str
    state: Literal[TaskState.SUCCEEDED, TaskState.FAILED]
    output: Any
    error: str | None


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do after the states recorded so far.

    start: the step instances to start now (none of their keys has a record yet).
    outcome: set once the run is finished; then ``start`` is empty.
    settle: instances kept by the control plane that have finished, with their results.
    """

    start: tuple[Start, ...]
    outcome: RunOutcome | None
    settle: tuple[Settle, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolRef:
    """A tool (or, with ``agent``, an agent) named in the document at ``field`` (e.g. ``steps[2].tool``)."""

    field: str
    name: str
    version: str | None
    agent: bool = False


@dataclass(frozen=True, slots=True)
class StepInfo:
    """What the control plane needs of one named element of a workflow.

    name: unique within the workflow; the ``step`` of every Start made from it.
    field: where the element is in the document, e.g. ``states.review`` or ``root.children[1]``.
    tool: the tool it calls, if it calls one.
    retry: its own retry policy as written (the control plane checks it), overriding the tool's.
    compensate: the tool to call, in reverse order, if the run fails after this element succeeded.
    """

    name: str
    field: str
    tool: ToolRef | None = None
    retry: Mapping[str, Any] | None = None
    compensate: Compensation | None = None
    uses: tuple[ToolRef, ...] = ()
    """Further tools and agents it names, pinned when the workflow is applied: a plan step's offers."""


@dataclass(frozen=True, slots=True)
class Compensation:
    """A compensating tool call; ``input`` is rendered with ``$.steps.<element>.output`` of the step it undoes."""

    tool: ToolRef
    queue: str
    input: Template


class Plan(Protocol):
    """A checked workflow of one kind, ready to plan runs."""

    @property
    def kind(self) -> str: ...

    @property
    def steps(self) -> Mapping[str, StepInfo]:
        """Every named element, by name."""
        ...

    @property
    def signals(self) -> frozenset[str]:
        """Every signal name the workflow waits for."""
        ...

    def decide(self, run_input: Any, states: Mapping[str, StepState]) -> Decision:
        """The next move of a run, given the state recorded for each step instance (key -> state), in the
        order the instances were started."""
        ...


def failed(error: str) -> Decision:
    return Decision((), RunOutcome(RunState.FAILED, None, error))
