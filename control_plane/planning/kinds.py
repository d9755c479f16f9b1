"""The kinds of workflow, and the planner that checks a document of each kind."""

from collections.abc import Callable, Mapping
from typing import Any

from control_plane.planning.bt import parse_bt
from control_plane.planning.dag import parse_dag
from control_plane.planning.fsm import parse_fsm
from control_plane.planning.model import Plan
from control_plane.planning.problems import SpecProblem, WorkflowInvalid

PARSERS: dict[str, Callable[[Mapping[str, Any]], Plan]] = {"dag": parse_dag, "fsm": parse_fsm, "bt": parse_bt}
KINDS = tuple(PARSERS)


def parse_workflow(doc: Mapping[str, Any]) -> Plan:
    """Check a workflow document of any kind; raises WorkflowInvalid with every problem found."""
    parser = PARSERS.get(doc.get("kind"))  # type: ignore[arg-type]
    if parser is None:
        raise WorkflowInvalid([SpecProblem("kind", f"must be one of {', '.join(KINDS)}, not {doc.get('kind')!r}")])
    return parser(doc)
