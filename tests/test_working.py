"""The working copy's plan view: what a workflow's planner is shown of a run, recorded again only as it changes."""

from bus.states import TaskState
from control_plane.engine.working import PlanView, WorkingTask
from control_plane.planning import StepState


def _task(step: str, state: TaskState = TaskState.QUEUED) -> WorkingTask:
    return WorkingTask(
        id="t-" + step,
        step=step,
        tool_name="echo",
        tool_version="1",
        queue="default",
        attempt=1,
        state=state,
        output=None,
        error=None,
        input="{}",
        element=step,
    )


def test_the_view_records_new_tasks_and_changed_ones_and_only_those() -> None:
    tasks = [_task("a"), _task("b")]
    view = PlanView('{"n": 1}')
    view.show(tasks, [])
    assert view.run_input == {"n": 1}
    assert dict(view.records) == {
        "a": StepState(TaskState.QUEUED, step="a"),
        "b": StepState(TaskState.QUEUED, step="b"),
    }
    version = view.records.version

    tasks[0].state, tasks[0].output = TaskState.SUCCEEDED, '{"v": 2}'
    tasks.append(_task("c"))
    view.show(tasks, ["t-a", "t-b"])

    assert view.records.since(version) == ["c", "a"]
    assert view.records["a"] == StepState(TaskState.SUCCEEDED, {"v": 2}, step="a")
    assert view.records["c"] == StepState(TaskState.QUEUED, step="c")
    version = view.records.version
    view.show(tasks, ["t-a", "t-b", "t-c"])
    assert view.records.since(version) == []
