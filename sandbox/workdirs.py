"""Worker dirs: a dir per backend named for the worker process that owns it, so that a later backend can tell
the leftovers of a dead worker (its dirs, its sandboxes) from those of a live one, even when the dead worker's pid
has been reused since."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

_WORKER_DIR = re.compile(r"(\d+)-(\d+)-[0-9a-f]+")


def own_worker_dir(root: Path) -> Path:
    """A new dir under `root` named for this process: its pid, the pid's start time (so that a reused pid does
    not pass for the dead worker) and a random part (so that two backends of one process do not share a dir)."""
    return root / f"{os.getpid()}-{process_start_time(os.getpid())}-{secrets.token_hex(4)}"


def dead_worker_dirs(root: Path) -> list[tuple[Path, int]]:
    """The dirs under `root` made by own_worker_dir for processes that have died since, with their pid."""
    dead = []
    for entry in root.iterdir():
        match = _WORKER_DIR.fullmatch(entry.name)
        if match is None or not entry.is_dir():
            continue
        pid, started = int(match[1]), int(match[2])
        if process_start_time(pid) != started:
            dead.append((entry, pid))
    return dead


def process_start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot), or None if there is no such process: with the pid, it tells
    a live worker from a dead one whose pid was reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 22 of stat; the command name (field 2) is in parentheses and may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])
