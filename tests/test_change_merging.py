"""A start notice and the result that follows it in one batch become one guarded task update."""

from bus.states import RunState, TaskState
from control_plane.engine.orchestrator import Change
from registry.runs import RunUpdate, TaskUpdate


def _change() -> Change:
    return Change(tenant="t", run=RunUpdate(id="r1", expected_seq=2, last_seq=2, state=RunState.RUNNING))


def _update(state: TaskState, attempt: int = 1, **extra: object) -> TaskUpdate:
    return TaskUpdate(id="t1", run_id="r1", attempt=attempt, state=state, **extra)  # type: ignore[arg-type]


def test_a_start_and_a_result_of_one_task_in_one_batch_become_one_update() -> None:
    change = _change()
    change.update_task(_update(TaskState.RUNNING, worker_id="w1", started_at=10.0))
    change.update_task(_update(TaskState.SUCCEEDED, output="{}", worker_id="w1", started_at=None, finished_at=11.0))
    (merged,) = change.task_updates.values()
    assert merged.state == TaskState.SUCCEEDED
    assert merged.started_at == 10.0
    assert merged.finished_at == 11.0
    assert merged.attempt == 1


def test_a_merged_retry_keeps_the_attempt_the_task_had_as_its_guard() -> None:
    change = _change()
    change.update_task(_update(TaskState.RUNNING, attempt=2, started_at=5.0))
    change.update_task(_update(TaskState.QUEUED, attempt=2, next_attempt=3, not_before=9.0))
    (merged,) = change.task_updates.values()
    assert (merged.attempt, merged.next_attempt, merged.state) == (2, 3, TaskState.QUEUED)
