"""Tool, workflow and model deployment files: YAML or JSON, told apart by content, loaded into the documents
the API takes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ._errors import FileError

StrPath = str | os.PathLike[str]


def load_tool_file(path: StrPath) -> dict[str, Any]:
    """Load a tool file and replace each `runtime.files` path (relative to the tool file's directory) by
    that file's text, since the API takes the contents, not paths on this machine."""
    path = Path(path)
    spec = _load_mapping(path)
    runtime = spec.get("runtime")
    if not isinstance(runtime, dict) or runtime.get("files") is None:
        return spec
    files = runtime["files"]
    if not isinstance(files, dict):
        raise FileError(f"{path}: runtime.files must map file names to paths")
    inlined = {}
    for name, relative in files.items():
        if not isinstance(relative, str):
            raise FileError(f"{path}: runtime.files.{name} must be a path")
        inlined[name] = read_text(path.parent / relative, f"{path}: runtime.files.{name}")
    runtime["files"] = inlined
    return spec


def load_workflow_file(path: StrPath) -> dict[str, Any]:
    """Load a workflow file as it is."""
    return _load_mapping(Path(path))


def load_agent_file(path: StrPath) -> dict[str, Any]:
    """Load an agent file as it is."""
    return _load_mapping(Path(path))


def load_model_file(path: StrPath) -> dict[str, Any]:
    """Load a model deployment file as it is."""
    return _load_mapping(Path(path))


def read_text(path: Path, what: str | None = None) -> str:
    """The file's UTF-8 text; a `FileError` says what the file was for (`what`) and the problem."""
    prefix = f"{what}: " if what else ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileError(f"{prefix}cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise FileError(f"{prefix}{path} is not UTF-8 text") from exc


def parse_json(text: str, source: str | None = None) -> Any:
    """Decode JSON; a `FileError` names the `source` (a file) and where the problem is."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        prefix = f"{source}: " if source else ""
        where = f"(line {exc.lineno}, column {exc.colno})"
        raise FileError(f"{prefix}not valid JSON: {exc.msg} {where}") from exc


def _load_mapping(path: Path) -> dict[str, Any]:
    text = read_text(path)
    if text.lstrip().startswith(("{", "[")):
        document = parse_json(text, str(path))
    else:
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FileError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
        if isinstance(document, dict):
            _version_as_text(document, path)
    if not isinstance(document, dict):
        found = "an empty document" if document is None else f"a {type(document).__name__}"
        raise FileError(f"{path}: expected a mapping at the top level, found {found}")
    return document


def _version_as_text(document: dict[str, Any], path: Path) -> None:
    """YAML reads an unquoted ``version: 1`` as a number: a whole number is taken as its text, but a
    decimal is refused, since YAML has already turned ``1.10`` into ``1.1``."""
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int | float):
        return
    if isinstance(version, int):
        document["version"] = str(version)
        return
    raise FileError(f'{path}: version {version!r} reads as a number in YAML; quote it, e.g. version: "{version}"')


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())
