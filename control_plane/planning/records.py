"""A run's step records kept from one decision to the next, so that a planner need not replay the whole run.

A planner is a pure function of the records it is shown, and any mapping will do: shown a plain one, it
replays the run from the start. Shown a ``Records``, which logs every key it sets, a planner also keeps a
memo in it (``keep``): what it worked out, and the version (``len`` of the log) it worked it out at. The
next decision asks for the keys set since that version (``since``) and looks again only at what those
records can change; a memo that one of them contradicts (a record it relied on changed, the run input is
not the same object) is dropped and the run replayed. Planners only read a ``Records``: its owner (the
engine's working copy of a run, a replay in the bench or a test) sets what it records, and nothing else
changes it, so the log is every change there is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast

from control_plane.planning.model import StepState


class Memo:
    """What a planner worked out from a ``Records`` up to ``version``, for the run input ``run_input``."""

    __slots__ = ("run_input", "version")

    def __init__(self, run_input: Any) -> None:
        self.run_input = run_input
        self.version = 0

    def absorb(self, changed: list[str]) -> bool:
        """Take in that the records of ``changed`` were set since; False if the memo no longer stands."""
        raise NotImplementedError


M = TypeVar("M", bound=Memo)
R = TypeVar("R")


def memoized(
    plan: object,
    run_input: Any,
    states: Mapping[str, StepState],
    fresh: Callable[[Any], M],
    decide: Callable[[M, Mapping[str, StepState]], R],
) -> R:
    """``decide(memo, states)`` from the memo ``plan`` kept in ``states`` if it still stands, else from
    ``fresh(run_input)`` (a replay from the start, as for any mapping that is not a ``Records``).

    ``decide`` brings the memo up to date with ``states`` as it decides; the memo is kept only once it
    returns, so one that raised half way through is never met again.
    """
    if not isinstance(states, Records):
        return decide(fresh(run_input), states)
    recalled = states.recall(plan, run_input)
    # Only ``plan`` keeps a memo under itself, and always one of the type ``fresh`` makes.
    if recalled is not None and recalled.absorb(states.since(recalled.version)):
        memo = cast(M, recalled)
    else:
        memo = fresh(run_input)
    states.forget(plan)
    result = decide(memo, states)
    states.keep(plan, memo)
    return result


class Records(Mapping[str, StepState]):
    """Step records by key, in the order they were first set, with the log of every key set."""

    __slots__ = ("_log", "_memos", "_states")

    def __init__(self, states: Mapping[str, StepState] | None = None) -> None:
        self._states: dict[str, StepState] = {}
        self._log: list[str] = []
        # The memo of each plan, by id(plan); the plan is kept beside it, so that its id stays its own.
        self._memos: dict[int, tuple[object, Memo]] = {}
        for key, state in (states or {}).items():
            self.set(key, state)

    def __getitem__(self, key: str) -> StepState:
        return self._states[key]

    def get(self, key: str, default: Any = None) -> Any:
        # Planners look keys up more than anything else: the Mapping mixin's get would go through a raise.
        return self._states.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._states

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)

    def set(self, key: str, state: StepState) -> None:
        """Record ``state`` for ``key`` (a new key goes last)."""
        # The same object again changes nothing; an equal one may (1 == 1.0 == True), so it is logged.
        if self._states.get(key) is state:
            return
        self._states[key] = state
        self._log.append(key)

    @property
    def version(self) -> int:
        return len(self._log)

    def since(self, version: int) -> list[str]:
        """The keys set after ``version``, in the order they were set (a key set twice is there twice)."""
        return self._log[version:]

    def recall(self, plan: object, run_input: Any) -> Memo | None:
        """The memo ``plan`` kept here for ``run_input``, or None if it kept none."""
        kept = self._memos.get(id(plan))
        if kept is None or kept[0] is not plan or kept[1].run_input is not run_input:
            return None
        return kept[1]

    def keep(self, plan: object, memo: Memo) -> None:
        """Keep ``memo`` as what ``plan`` worked out from every record set so far."""
        memo.version = len(self._log)
        self._memos[id(plan)] = (plan, memo)

    def forget(self, plan: object) -> None:
        """Drop the memo of ``plan``, if it kept one."""
        self._memos.pop(id(plan), None)
