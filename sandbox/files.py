"""A call's files: relative paths that must stay inside the call's working dir, and writing them there."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from .protocol import SandboxError


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write a call's files below `root`, refusing (SandboxError) any path that would leave it.

    Blocking: run it off the event loop.
    """
    for relative, content in check_paths(files):
        target = root.joinpath(*relative.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as error:
            raise SandboxError(f"cannot write file {target.relative_to(root)}: {error}") from error


def check_paths(files: Mapping[str, str]) -> list[tuple[PurePosixPath, str]]:
    """The call's files as relative paths, refusing (SandboxError) any path that would leave the working dir."""
    checked = []
    for name, content in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise SandboxError(f"file path {name!r} must be relative and stay inside the working directory")
        checked.append((relative, content))
    return checked
