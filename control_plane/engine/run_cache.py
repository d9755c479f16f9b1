"""Runs this control plane planned recently, so applying a result need not read them back first.

Never the record, only a guess of it: every change written from a cached run is guarded by the run's
``last_seq`` in PostgreSQL, so a stale entry (another control plane or a cancel changed the run) makes
the write miss; the orchestrator then drops the entry, reads the run and plans again.
"""

from collections import OrderedDict
from collections.abc import Iterable

from bus.states import FINAL_RUN_STATES
from control_plane.engine.working import WorkingRun


class RunCache:
    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._runs: OrderedDict[str, WorkingRun] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def take(self, run_ids: Iterable[str]) -> dict[str, WorkingRun]:
        """Remove and return the cached runs among ``run_ids``; the caller puts back what stays valid."""
        found = {}
        for run_id in run_ids:
            run = self._runs.pop(run_id, None)
            if run is not None:
                found[run_id] = run
        return found

    def put(self, run: WorkingRun) -> None:
        """Remember a run as just written or read; finished runs are forgotten (late results read them back)."""
        if run.state in FINAL_RUN_STATES:
            self._runs.pop(run.id, None)
            return
        self._runs[run.id] = run
        self._runs.move_to_end(run.id)
        while len(self._runs) > self._limit:
            self._runs.popitem(last=False)

    def drop(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
