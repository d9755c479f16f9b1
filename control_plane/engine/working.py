"""The engine's working copy of a run: what the orchestrator plans from and updates while it plans.

Built from the store's rows (``registry.runs.StoredRun``, or the rows a submission has just written) and
never written back as such: what reaches PostgreSQL is the change planned from it, guarded by the
``last_seq`` the copy was made at. A copy outlives its planning step only in the run cache, as a guess of
the record that the next guarded write checks; so does what its workflow's planner was shown of it
(``PlanView``), which a copy read again starts without.
"""

from collections.abc import Iterable
from typing import Any

import msgspec

from bus.states import RunState, TaskState
from control_plane.catalog.resolver import BUILTIN_AGENT, BUILTIN_PLAN
from control_plane.planning import StepState
from control_plane.planning.records import Records
from registry.runs import NewRun, NewTask, StoredRun


class WorkingTask(msgspec.Struct, kw_only=True):
    id: str
    step: str
    """The step instance's key, unique within the run."""
    tool_name: str
    tool_version: str
    queue: str
    attempt: int
    state: TaskState
    output: str | None
    error: str | None
    input: str
    element: str
    """The workflow element the task is an instance of."""
    worker_id: str | None = None
    """The worker of its latest attempt that started, and when, as stored: a cancellation keeps them."""
    started_at: float | None = None

    @classmethod
    def new(cls, task: NewTask) -> "WorkingTask":
        """A task as just recorded: first attempt, queued (or recorded succeeded)."""
        return cls(
            id=task.id,
            step=task.step,
            tool_name=task.tool_name,
            tool_version=task.tool_version,
            queue=task.queue,
            attempt=1,
            state=TaskState(task.state),
            output=task.output,
            error=None,
            input=task.input,
            element=task.element or task.step,
        )


class PlanView:
    """What the workflow's planner is shown of a run: its input, decoded once, and the records of its tasks
    (a ``planning.records.Records``), each decoded again only once it changed.

    Kept with the working copy, so that a planning step decodes only the tasks it changed and the planner
    decides on from what it kept of its last decision instead of replaying the run. ``show`` is told every
    task the copy changed (each change of a task goes through ``Change.update_task``) and takes the tasks
    created since on its own (they are only ever appended); a task whose state, output and error are the
    same objects as last time is not recorded again.
    """

    __slots__ = ("_shown", "records", "run_input")

    def __init__(self, run_input: str) -> None:
        self.run_input: Any = msgspec.json.decode(run_input)
        self.records = Records()
        self._shown: dict[str, tuple[WorkingTask, TaskState, str | None, str | None]] = {}

    def show(self, tasks: list["WorkingTask"], changed: Iterable[str]) -> None:
        """Record the tasks created since the last call, and the tasks by id in ``changed`` that changed."""
        for task in tasks[len(self._shown) :]:
            self._record(task)
        for task_id in changed:
            shown = self._shown.get(task_id)
            if shown is not None:
                task = shown[0]
                if (task.state, task.output, task.error) != shown[1:]:
                    self._record(task)

    def _record(self, task: "WorkingTask") -> None:
        self._shown[task.id] = (task, task.state, task.output, task.error)
        output = msgspec.json.decode(task.output) if task.output is not None else None
        # An agent (or plan) step's loop is rebuilt from what its own instance recorded.
        recorded = msgspec.json.decode(task.input) if task.tool_name in (BUILTIN_AGENT, BUILTIN_PLAN) else None
        self.records.set(task.step, StepState(task.state, output, task.error, task.element, recorded))


class WorkingRun(msgspec.Struct, kw_only=True):
    id: str
    tenant: str
    target_kind: str
    target_name: str
    target_version: str
    state: RunState
    input: str
    last_seq: int
    """The version this copy was made at, or that its latest committed change left."""
    tasks: list[WorkingTask]
    """In the order they were created."""
    view: PlanView | None = None
    """What its workflow's planner was last shown of it; None until it is planned."""

    @classmethod
    def of(cls, run: StoredRun) -> "WorkingRun":
        """A working copy of a run as stored (its tasks as well)."""
        return msgspec.convert(run, cls, from_attributes=True)

    @classmethod
    def new(cls, run: NewRun, tasks: list[NewTask]) -> "WorkingRun":
        """A run as just recorded, with its first tasks."""
        return cls(
            id=run.id,
            tenant=run.tenant,
            target_kind=run.target_kind,
            target_name=run.target_name,
            target_version=run.target_version,
            state=run.state,
            input=run.input,
            last_seq=run.last_seq,
            tasks=[WorkingTask.new(task) for task in tasks],
        )
