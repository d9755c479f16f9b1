"""A start notice and the result that follows it in one batch become one guarded task update."""

from control_plane.engine.orchestrator import Change
from registry.runs import RunUpdate, TaskUpdate


def _update(state: str, attempt: int = 1, **extra: object) -> TaskUpdate:
    fields: dict[str, object] = {
        "output": None,
        "error": None,
        "detail": None,
        "worker_id": None,
        "started_at": None,
        "finished_at": None,
    }
    fields.update(extra)
    return TaskUpdate("t1", "r1", attempt, state, **fields)  # type: ignore[arg-type]


def test_a_start_and_a_result_of_one_task_in_one_batch_become_one_update() -> None:
    change = Change(RunUpdate("r1", 2, 2, "running", None, None))
    change.update_task(_update("running", worker_id="w1", started_at=10.0))
    change.update_task(_update("succeeded", output="{}", worker_id="w1", started_at=None, finished_at=11.0))
    (merged,) = change.task_updates.values()
    assert merged.state == "succeeded"
    assert merged.started_at == 10.0
    assert merged.finished_at == 11.0
    assert merged.attempt == 1


def test_a_merged_retry_keeps_the_attempt_the_task_had_as_its_guard() -> None:
    change = Change(RunUpdate("r1", 2, 2, "running", None, None))
    change.update_task(_update("running", attempt=2, started_at=5.0))
    change.update_task(_update("queued", attempt=2, next_attempt=3, not_before=9.0))
    (merged,) = change.task_updates.values()
    assert (merged.attempt, merged.next_attempt, merged.state) == (2, 3, "queued")
