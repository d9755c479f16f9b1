"""Runs this control plane planned recently, so applying a result need not read them back first.

Never the record, only a guess of it: every change written from a cached run is guarded by the run's
``last_seq`` in PostgreSQL, so a stale entry (another control plane or a cancel changed the run) makes
the write miss; the orchestrator then drops the entry, reads the run and plans again.
"""

from collections import OrderedDict
from collections.abc import Iterable

from registry.runs import FINAL_RUN_STATES, RunState


class RunCache:
    def __init__(self, limit: int = 50_000) -> None:
        self._limit = limit
        self._runs: OrderedDict[str, RunState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._runs)

    def take(self, run_ids: Iterable[str]) -> dict[str, RunState]:
        """Remove and return the cached runs among ``run_ids``; the caller puts back what stays valid."""
        found = {}
        for run_id in run_ids:
            state = self._runs.pop(run_id, None)
            if state is not None:
                found[run_id] = state
        return found

    def put(self, state: RunState) -> None:
        """Remember a run as just written; finished runs are forgotten (late results read them back)."""
        if state.state in FINAL_RUN_STATES:
            self._runs.pop(state.id, None)
            return
        self._runs[state.id] = state
        self._runs.move_to_end(state.id)
        while len(self._runs) > self._limit:
            self._runs.popitem(last=False)

    def drop(self, run_id: str) -> None:
        self._runs.pop(run_id, None)
