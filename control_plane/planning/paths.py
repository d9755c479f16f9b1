"""The path language: how a step's input is built from the run input and earlier outputs.

A template is any JSON value. A string in it that starts with ``$.`` is a path, evaluated against the
context ``{"input": <run input>, "steps": {<name>: {"output": <its output>}}}``; a string that starts
with ``$$`` stands for itself with one ``$`` removed; everything else is literal.

Grammar, read by hand-written recursive descent straight over the characters (``Cursor``)::

    path    := "$" "." key segment*
    segment := "." key | "[" index "]" | "[" quoted "]"
    key     := one or more of A-Z a-z 0-9 _ -
    index   := one to 100 of 0-9
    quoted  := '"' ... '"' or "'" ... "'", where a backslash escapes the quote or itself

A path starts with ``$.input`` or ``$.steps.NAME.output``. Segments are written without spaces, so a
space ends a path: the condition language (expr.py) adds its comparisons, and/or/not, ``in`` and
``length`` as further productions of ``Cursor`` around ``path``, reusing ``integer`` and ``quoted``.
Templates are compiled once, when a workflow is applied, and rendered on every step start.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeAlias

from control_plane.planning.problems import KEY_CHARS, SpecProblem, WorkflowInvalid, child_field

_DIGITS = frozenset(string.digits)
# Far beyond any index or literal anyone writes, and well inside what int() accepts from a string.
_MAX_DIGITS = 100
_QUOTES = frozenset("\"'")


class PathError(Exception):
    """A path found nothing where it points in the context it was evaluated against."""


@dataclass(frozen=True, slots=True)
class Path:
    """A parsed path: ``text`` as written, ``parts`` the keys (str) and indexes (int) after ``$``."""

    text: str
    parts: tuple[str | int, ...]

    @property
    def step(self) -> str | None:
        """The step whose output the path reads; None for a path into the run input."""
        return str(self.parts[1]) if self.parts[0] == "steps" else None

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        value: Any = context
        for part in self.parts:
            if isinstance(part, str):
                # dict first: JSON values are dicts, and the Mapping ABC check alone is several times slower.
                if not isinstance(value, dict | Mapping):
                    raise PathError(f"{self.text}: no key {part!r} in {_describe(value)}")
                try:
                    value = value[part]
                except KeyError:
                    raise PathError(f"{self.text}: no key {part!r}") from None
            elif not isinstance(value, list | tuple):
                raise PathError(f"{self.text}: no index {part} in {_describe(value)}")
            elif part >= len(value):
                raise PathError(f"{self.text}: no index {part} in a list of {len(value)}")
            else:
                value = value[part]
        return value


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


class ParseError(Exception):
    """Bad syntax at ``pos`` (0-based) in the text; turned into a SpecProblem by whoever knows the field.

    reason: what is wrong, e.g. "expected ']'".
    found: what stands at ``pos`` ("'x'", "the end"); None when the reason is about a whole path.
    """

    def __init__(self, pos: int, reason: str, found: str | None = None) -> None:
        self.pos = pos
        self.reason = reason
        self.found = found
        where = "" if found is None else f" at character {pos + 1}, found {found}"
        super().__init__(f"{reason}{where}")


class Cursor:
    """Reads one expression left to right, one production per method."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def take(self, char: str) -> bool:
        if self.peek() != char:
            return False
        self.pos += 1
        return True

    def found(self) -> str:
        """What stands here, as an error message names it."""
        return repr(self.peek()) if self.peek() else "the end"

    def fail(self, expected: str) -> NoReturn:
        raise ParseError(self.pos, f"expected {expected}", self.found())

    def path(self) -> Path:
        start = self.pos
        if not self.take("$"):
            self.fail("'$'")
        if not self.take("."):
            self.fail("'.' after '$'")
        parts: list[str | int] = [self.key()]
        while True:
            if self.take("."):
                parts.append(self.key())
            elif self.take("["):
                parts.append(self.integer() if self.peek() in _DIGITS else self.quoted())
                if not self.take("]"):
                    self.fail("']'")
            else:
                break
        if parts[0] not in ("input", "steps"):
            raise ParseError(start, "a path starts with $.input or $.steps")
        if parts[0] == "steps" and (len(parts) < 3 or not isinstance(parts[1], str) or parts[2] != "output"):
            raise ParseError(start, "a step's output is read as $.steps.NAME.output")
        return Path(self.text[start : self.pos], tuple(parts))

    def key(self) -> str:
        return self.run_of(KEY_CHARS, "a key")

    def integer(self) -> int:
        start = self.pos
        digits = self.run_of(_DIGITS, "a number")
        if len(digits) > _MAX_DIGITS:
            self.pos = start
            self.fail(f"a number of at most {_MAX_DIGITS} digits")
        return int(digits)

    def run_of(self, chars: frozenset[str], expected: str) -> str:
        """The longest run of ``chars`` from here; there must be at least one."""
        start = self.pos
        while self.peek() in chars:
            self.pos += 1
        if self.pos == start:
            self.fail(expected)
        return self.text[start : self.pos]

    def quoted(self) -> str:
        quote = self.peek()
        if quote not in _QUOTES:
            self.fail("an index or a quoted key")
        self.pos += 1
        chars: list[str] = []
        while (char := self.peek()) != quote:
            if not char:
                self.fail(f"the closing {quote}")
            if char == "\\":
                self.pos += 1
                char = self.peek()
                if char not in ("\\", quote):
                    self.fail(f"\\ or {quote} after a backslash")
            chars.append(char)
            self.pos += 1
        self.pos += 1
        return "".join(chars)


def _parse(text: str) -> Path:
    cursor = Cursor(text)
    path = cursor.path()
    if cursor.peek():
        cursor.fail("'.', '[' or the end of the path")
    return path


def parse_path(text: str, field: str) -> Path:
    """Parse ``text`` as a path; bad syntax raises WorkflowInvalid with one problem at ``field``."""
    try:
        return _parse(text)
    except ParseError as exc:
        raise WorkflowInvalid([_path_problem(text, field, exc)]) from None


def _path_problem(text: str, field: str, exc: ParseError) -> SpecProblem:
    return SpecProblem(field, f"bad path {text!r}: {exc}")


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str | int | float | bool | None

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True, slots=True)
class _Object:
    items: tuple[tuple[str, _Node], ...]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return {key: node.evaluate(context) for key, node in self.items}


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Node, ...]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        return [node.evaluate(context) for node in self.items]


@dataclass(frozen=True, slots=True)
class _OrNull:
    """A path that reads null where it finds nothing."""

    path: Path

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        try:
            return self.path.evaluate(context)
        except PathError:
            return None


# Objects and arrays are rebuilt on every render so that no two renders share a mutable value.
_Node: TypeAlias = "Path | _OrNull | _Literal | _Object | _Array"


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template; ``paths`` lists each path in it with the field where it stands."""

    _root: _Node
    paths: tuple[tuple[str, Path], ...]

    def render(self, context: Mapping[str, Any]) -> Any:
        """The template's value in ``context``; raises PathError where a path finds nothing, unless the
        template was compiled with ``missing_is_null``."""
        return self._root.evaluate(context)

    def step_references(self) -> frozenset[str]:
        """The names of the steps whose outputs the template reads."""
        return frozenset(path.step for _, path in self.paths if path.step is not None)


def compile_template(value: Any, field: str, *, missing_is_null: bool = False) -> Template:
    """Compile the JSON value found at ``field``; raises WorkflowInvalid with every problem in it.

    missing_is_null: a path that finds nothing reads null instead of failing the render (state machines
    and behavior trees read states and leaves that may not have run yet, as their conditions do).
    """
    compiler = _Compiler(missing_is_null)
    root = compiler.compile(value, field)
    if compiler.problems:
        raise WorkflowInvalid(compiler.problems)
    return Template(root, tuple(compiler.paths))


class _Compiler:
    def __init__(self, missing_is_null: bool) -> None:
        self.missing_is_null = missing_is_null
        self.problems: list[SpecProblem] = []
        self.paths: list[tuple[str, Path]] = []

    def compile(self, value: Any, field: str) -> _Node:
        if isinstance(value, str):
            return self.string(value, field)
        if value is None or isinstance(value, bool | int | float):
            return _Literal(value)
        if isinstance(value, Mapping):
            items: list[tuple[str, _Node]] = []
            for key, item in value.items():
                if isinstance(key, str):
                    items.append((key, self.compile(item, child_field(field, key))))
                else:
                    self.problems.append(SpecProblem(child_field(field, str(key)), "a key must be a string"))
            return _Object(tuple(items))
        if isinstance(value, list | tuple):
            return _Array(tuple(self.compile(item, child_field(field, i)) for i, item in enumerate(value)))
        self.problems.append(SpecProblem(field, f"not a JSON value ({type(value).__name__})"))
        return _Literal(None)

    def string(self, value: str, field: str) -> _Node:
        if value.startswith("$$"):
            return _Literal(value[1:])
        if not value.startswith("$."):
            return _Literal(value)
        try:
            path = _parse(value)
        except ParseError as exc:
            self.problems.append(_path_problem(value, field, exc))
            return _Literal(None)
        self.paths.append((field, path))
        return _OrNull(path) if self.missing_is_null else path
