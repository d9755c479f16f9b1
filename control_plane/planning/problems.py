"""What is wrong with a workflow definition, and where."""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from dataclasses import dataclass

# Characters of a key written after a dot, both in paths (``$.input.my-key``) and in problem fields.
KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_-")


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One problem in a workflow definition.

    field: the exact location in the document, e.g. ``steps[2].needs[0]`` or ``steps[1].input.text``.
    detail: a sentence for a human.
    """

    field: str
    detail: str

    def __str__(self) -> str:
        return f"{self.field}: {self.detail}"


class WorkflowInvalid(Exception):
    """A workflow definition was refused; ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: Iterable[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid workflow:\n" + "\n".join(f"  {problem}" for problem in self.problems))


def child_field(parent: str, key: str | int) -> str:
    """The location of ``key`` inside ``parent``: ``a.b`` for plain keys, ``a["b c"]`` otherwise, ``a[0]``."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if key and KEY_CHARS.issuperset(key):
        return f"{parent}.{key}"
    return f"{parent}[{json.dumps(key)}]"
