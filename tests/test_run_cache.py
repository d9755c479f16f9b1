"""The run cache: a guess of recent runs, never the record."""

from control_plane.engine.run_cache import RunCache
from registry.runs import RunState, TaskState


def _run(run_id: str, state: str = "running") -> RunState:
    task = TaskState("t-" + run_id, "main", "noop", "1", "default", 1, "queued", None, None, "{}", "main")
    return RunState(run_id, "default", "tool", "noop", "1", state, "{}", 2, [task])


def test_taking_a_run_removes_it_so_a_failed_write_cannot_leave_a_stale_copy() -> None:
    cache = RunCache()
    cache.put(_run("a"))
    assert set(cache.take(["a", "b"])) == {"a"}
    assert cache.take(["a"]) == {}


def test_finished_runs_are_forgotten() -> None:
    cache = RunCache()
    cache.put(_run("a"))
    cache.put(_run("a", state="succeeded"))
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
