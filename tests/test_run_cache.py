"""The run cache: a guess of recent runs, never the record."""

from bus.states import RunState, TaskState
from control_plane.engine.run_cache import RunCache
from control_plane.engine.working import WorkingRun, WorkingTask


def _run(run_id: str, state: RunState = RunState.RUNNING) -> WorkingRun:
    task = WorkingTask(
        id="t-" + run_id,
        step="main",
        tool_name="noop",
        tool_version="1",
        queue="default",
        attempt=1,
        state=TaskState.QUEUED,
        output=None,
        error=None,
        input="{}",
        element="main",
    )
    return WorkingRun(
        id=run_id,
        tenant="default",
        target_kind="tool",
        target_name="noop",
        target_version="1",
        state=state,
        input="{}",
        last_seq=2,
        tasks=[task],
    )


def test_taking_a_run_removes_it_so_a_failed_write_cannot_leave_a_stale_copy() -> None:
    cache = RunCache()
    cache.put(_run("a"))
    assert set(cache.take(["a", "b"])) == {"a"}
    assert cache.take(["a"]) == {}


def test_finished_runs_are_forgotten() -> None:
    cache = RunCache()
    cache.put(_run("a"))
    cache.put(_run("a", state=RunState.SUCCEEDED))
    assert len(cache) == 0


def test_the_least_recently_written_runs_are_evicted_past_the_limit() -> None:
    cache = RunCache(limit=2)
    for run_id in ("a", "b", "c"):
        cache.put(_run(run_id))
    assert set(cache.take(["a", "b", "c"])) == {"b", "c"}


def test_a_dropped_run_is_read_again() -> None:
    cache = RunCache()
    cache.put(_run("a"))
    cache.drop("a")
    assert cache.take(["a"]) == {}
