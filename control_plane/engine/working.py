"""The engine's working copy of a run: what the orchestrator plans from and updates while it plans.

Built from the store's rows (``registry.runs.StoredRun``, or the rows a submission has just written) and
never written back as such: what reaches PostgreSQL is the change planned from it, guarded by the
``last_seq`` the copy was made at. A copy outlives its planning step only in the run cache, as a guess of
the record that the next guarded write checks.
"""

import msgspec

from bus.states import RunState, TaskState
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
