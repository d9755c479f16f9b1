"""Planning: turns a workflow definition and a run's recorded step instances into the next ones to start.

Pure code: no I/O, and nothing imported outside the standard library but ``bus.states`` (the one definition
of task and run states, itself standard-library only). A planner parses a workflow document once, when it
is applied, and then decides the same way every time it is shown the same records, so a run can be
replayed from what is recorded.
Three kinds share one interface (model.Plan): DAG (dag.py), finite-state machine (fsm.py) and behavior
tree (bt.py); agent steps (agent_steps.py) and plan steps (planner.py), whose work the control plane keeps
under their keys (kept.py), layer over them; conditions are written in a small safe language (expr.py)
and step inputs are templates (paths.py); compensation (saga.py) is the same for all three. Shown a
``records.Records`` kept from one decision of a run to the next, a planner decides on from the memo it
kept there rather than replaying the run, and decides exactly as the replay would.
``kinds`` picks the planner of a document.
"""

from control_plane.planning.model import (
    Action,
    AwaitSignal,
    Compensation,
    Decision,
    MakePlan,
    Plan,
    Record,
    RunAgent,
    RunOutcome,
    RunPlan,
    Settle,
    Sleep,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
)
from control_plane.planning.paths import Path, PathError, Template, compile_template, parse_path
from control_plane.planning.problems import SpecProblem, WorkflowInvalid
from control_plane.planning.saga import decide

__all__ = [
    "Action",
    "AwaitSignal",
    "Compensation",
    "Decision",
    "MakePlan",
    "Path",
    "PathError",
    "Plan",
    "Record",
    "RunAgent",
    "RunOutcome",
    "RunPlan",
    "Settle",
    "Sleep",
    "SpecProblem",
    "Start",
    "StepInfo",
    "StepState",
    "Template",
    "ToolCall",
    "ToolRef",
    "WorkflowInvalid",
    "compile_template",
    "decide",
    "parse_path",
]
