"""What every sandbox backend offers, how to open one by name, and the work all backends share."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Protocol

from .types import Outcome, SandboxCall, SandboxError


class Backend(Protocol):
    """Runs tool calls in isolation. One backend serves many concurrent calls; close it once at the end."""

    kind: str
    """The backend's name, as given to open_backend and reported in every Outcome."""

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call to its end (exit, wall limit or output cap); raise SandboxError if it cannot start."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (pools, connections)."""
        ...


def _open_process() -> Backend:
    # Imported here so that a backend's dependencies load only when that backend is chosen.
    from .process import ProcessBackend

    return ProcessBackend()


_OPENERS: dict[str, Callable[[], Backend]] = {"process": _open_process}


def open_backend(name: str) -> Backend:
    """The backend called `name` (the AF_SANDBOX setting); SandboxError naming the choices if none is."""
    opener = _OPENERS.get(name)
    if opener is None:
        raise SandboxError(f"unknown sandbox backend {name!r}; valid choices: {', '.join(sorted(_OPENERS))}")
    return opener()


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write a call's files below `root`, refusing (SandboxError) any path that would leave it.

    Blocking: run it off the event loop.
    """
    targets = []
    for name, content in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise SandboxError(f"file path {name!r} must be relative and stay inside the working directory")
        targets.append((root.joinpath(*relative.parts), content))
    for target, content in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as error:
            raise SandboxError(f"cannot write file {target.relative_to(root)}: {error}") from error
