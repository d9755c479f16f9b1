"""Percentiles, medians and CPU accounting of process trees."""

import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def _stat(pid: int, reaped: bool = False) -> tuple[int, float] | None:
    """(parent pid, CPU seconds used by the process itself, and with ``reaped`` by the children it waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    ticks = sum(int(fields[i]) for i in ((11, 12, 13, 14) if reaped else (11, 12)))
    return int(fields[1]), ticks / _TICKS


def tree_cpu_seconds(root: int, *, reaped: bool = False) -> float:
    """CPU seconds of ``root`` and every live descendant (PostgreSQL's backends are children of the postmaster);
    with ``reaped`` those of the descendants that exited and were waited for too (a worker's sandboxes)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name), reaped)
            if stat is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = stat
    total, frontier = 0.0, [root]
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    while frontier:
        pid = frontier.pop()
        total += cpu.get(pid, 0.0)
        frontier.extend(children.get(pid, []))
    return total


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system
