"""Planning: turns a workflow definition and a run's recorded step states into the next steps to start.

Pure code (no I/O): a planner parses a workflow document once, when it is applied, and then decides the
same way every time it is shown the same states, so a run can be replayed from what is recorded.
"""

from control_plane.planning.dag import (
    DagStep,
    DagWorkflow,
    Decision,
    RunOutcome,
    StepInputError,
    StepStart,
    StepState,
    decide,
    parse_dag,
)
from control_plane.planning.paths import Path, PathError, Template, compile_template, parse_path
from control_plane.planning.problems import SpecProblem, WorkflowInvalid

__all__ = [
    "DagStep",
    "DagWorkflow",
    "Decision",
    "Path",
    "PathError",
    "RunOutcome",
    "SpecProblem",
    "StepInputError",
    "StepStart",
    "StepState",
    "Template",
    "WorkflowInvalid",
    "compile_template",
    "decide",
    "parse_dag",
    "parse_path",
]
