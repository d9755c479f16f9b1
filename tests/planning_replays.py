"""A random run of any planner kept in a ``Records``, checked decision by decision against a replay from the
start (the same records in a plain dict): what the planner kept of its last decision never shows."""

from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from bus.states import TaskState
from control_plane.planning import Decision, Plan, Start, StepState
from control_plane.planning.model import FINISHED
from control_plane.planning.records import Records

ANY_RECORD = st.builds(
    StepState,
    st.sampled_from(list(TaskState)),
    st.sampled_from([None, "x", {"v": 1}, {"ok": True}, {"signal": "a", "data": 1}]),
    st.sampled_from([None, "boom", "timed out"]),
)


def run_against_replays(
    plan: Plan,
    run_input: Any,
    data: st.DataObject,
    finish: Callable[[Start], st.SearchStrategy[StepState]],
    strays: list[str],
    steps: int = 60,
) -> Records:
    """Drive a run of ``plan``: after each decision, record what it started as queued, then finish an open
    instance with a record drawn from ``finish`` of its start, or (one time in five) set any record at all on
    a key of ``strays`` or one recorded already, as no engine would (a finished record again, another state).
    Every decision from the ``Records`` must equal the replay from the start. Returns the records."""
    records = Records()
    started: dict[str, Start] = {}
    for _ in range(steps):
        decision: Decision = plan.decide(run_input, records)
        assert decision == plan.decide(run_input, dict(records))
        for start in decision.start:
            records.set(start.key, StepState(TaskState.QUEUED, step=start.step))
            started[start.key] = start
        open_keys = [key for key, record in records.items() if record.state not in FINISHED and key in started]
        if (strays or records) and data.draw(st.integers(0, 4)) == 0:
            key = data.draw(st.sampled_from([*strays, *records]))
            records.set(key, data.draw(ANY_RECORD))
        elif open_keys:
            key = data.draw(st.sampled_from(open_keys))
            records.set(key, data.draw(finish(started[key])))
        elif decision.outcome is not None:
            break
    return records
