"""`af init`: a new project from the templates shipped in this package (``templates/<layer>/``).

A template is a stack of layers copied in order, a later layer's file replacing an earlier one's (its
README, say): ``tool`` is a tool with its test, ``default`` adds a workflow and an agent that use it.
``{{project}}`` in a file becomes the project's name (its directory's).
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from ._errors import FileError

TEMPLATES: dict[str, tuple[str, ...]] = {
    "default": ("tool", "default"),
    "tool": ("tool",),
}
"""Each template's layers, in the order they are copied."""
DEFAULT_TEMPLATE = "default"


def _files(layer: Traversable, below: Path = Path()) -> dict[Path, str]:
    found: dict[Path, str] = {}
    for entry in layer.iterdir():
        if entry.is_dir():
            if entry.name != "__pycache__":
                found.update(_files(entry, below / entry.name))
        else:
            found[below / entry.name] = entry.read_text(encoding="utf-8")
    return found


def scaffold(directory: Path, template: str = DEFAULT_TEMPLATE) -> list[Path]:
    """Write ``template``'s files into ``directory`` (made if missing; refused unless empty); returns the
    files written, relative to it."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise FileError(f"{directory} is not an empty directory: af init writes a new project only")
    root = resources.files("agentflow") / "templates"
    files: dict[Path, str] = {}
    for layer in TEMPLATES[template]:
        files.update(_files(root / layer))
    project = directory.resolve().name
    for relative, text in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text.replace("{{project}}", project), encoding="utf-8")
    return sorted(files)
