"""Batched statements: rows travel to PostgreSQL as one array per column and are unnested back into rows.

A batch is declared once, as the ``Columns`` of the record it is made of: one column per field, in the
record's order, named as the field and typed from its annotation (a field that is itself a record stands
for its own fields). A ``Statement`` is written by a function that asks for ``unnest(...) AS u(...)`` of
the batches it reads; placeholders are numbered as they are asked for (a batch asked for again keeps its
numbers), and ``args`` lays out the arrays of a call in that same order. No ``$n`` is written by hand, and
a column is added by adding a field to its record and using it by name in the SQL.

Rows come back mapped onto their records by column name (``rows_of``), never by position, and states are
written into SQL from ``bus.states`` (``literal``, ``one_of``), never spelled out again.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from operator import attrgetter
from typing import Any, TypeVar

import msgspec
from msgspec import inspect

R = TypeVar("R")

_ELEMENT_TYPES: dict[type[inspect.Type], str] = {
    inspect.StrType: "text",
    inspect.EnumType: "text",
    inspect.IntType: "int",
    inspect.FloatType: "float8",
    inspect.BoolType: "bool",
}


class Columns:
    """The columns a kind of record travels as; ``types`` names the columns whose element type is not the
    one their annotation gives (``id="uuid"``, ``max_rss_kb="int8"``)."""

    def __init__(self, record: type[msgspec.Struct], **types: str) -> None:
        self.types: dict[str, str] = {}
        self._reads: dict[str, Callable[[Any], object]] = {}
        info = inspect.type_info(record)
        assert isinstance(info, inspect.StructType)
        self._add(info, "", types)
        if unknown := set(types) - set(self.types):
            raise ValueError(f"{record.__name__} has no field {', '.join(sorted(unknown))}")

    def _add(self, info: inspect.StructType, path: str, types: Mapping[str, str]) -> None:
        for field in info.fields:
            kind = field.type
            if isinstance(kind, inspect.UnionType):  # X | None
                (kind,) = (member for member in kind.types if not isinstance(member, inspect.NoneType))
            if isinstance(kind, inspect.StructType):
                self._add(kind, f"{path}{field.name}.", types)
                continue
            if field.name in self.types:
                raise ValueError(f"two fields travel as column {field.name}")
            self.types[field.name] = types.get(field.name) or _ELEMENT_TYPES[type(kind)]
            self._reads[field.name] = attrgetter(path + field.name)

    def array(self, name: str, rows: Sequence[object]) -> list[object]:
        read = self._reads[name]
        return [read(row) for row in rows]


class Statement:
    """A statement over batches of rows; ``write`` is given the statement (for ``unnest``) and returns its SQL."""

    def __init__(self, write: Callable[["Statement"], str]) -> None:
        self._params: list[tuple[Columns, str]] = []
        self._first: dict[int, int] = {}
        self.sql = write(self)

    def unnest(self, batch: Columns) -> str:
        """``unnest($i::type[], ...) AS u(column, ...)`` over every column of ``batch``."""
        first = self._first.get(id(batch))
        if first is None:
            first = self._first[id(batch)] = len(self._params) + 1
            self._params.extend((batch, name) for name in batch.types)
        arrays = ", ".join(f"${first + i}::{kind}[]" for i, kind in enumerate(batch.types.values()))
        return f"unnest({arrays}) AS u({', '.join(batch.types)})"

    def args(self, rows: Mapping[Columns, Sequence[object]]) -> list[list[object]]:
        """The arguments of a call: one array per placeholder, read from the rows given for each batch."""
        return [batch.array(name, rows[batch]) for batch, name in self._params]


def rows_of(kind: type[R], records: Iterable[Mapping[str, Any]]) -> list[R]:
    """Each record (an asyncpg row, or a dict of its columns) as a ``kind``, field by column name; text
    becomes the enum a field is typed with (a state)."""
    return [msgspec.convert(dict(record), kind) for record in records]


def literal(state: StrEnum) -> str:
    """A state as an SQL string literal (states are lowercase words: nothing to escape)."""
    return f"'{state}'"


def one_of(states: Iterable[StrEnum]) -> str:
    """``('a', 'b')``, for ``IN``: the states in their declared order."""
    wanted = set(states)
    declared = [state for state in type(next(iter(wanted))) if state in wanted]
    return f"({', '.join(literal(state) for state in declared)})"
