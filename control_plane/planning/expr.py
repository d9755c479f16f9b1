"""The condition language of the planners: DAG ``when:``, loop ``until:``, FSM transition ``when:`` and
behavior-tree ``condition`` leaves and ``repeat_until``.

A condition is compiled once, when a workflow is applied, into a tree of closures (nothing is ever passed
to ``eval``), and evaluated on every planning step against the context templates use:
``{"input": <run input>, "steps": {<name>: {"output": <its output>}}}``.

Grammar, lowest precedence first, read by recursive descent over paths.py's ``Cursor``::

    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not" "in") operand)?
    operand    := path | number | quoted | "true" | "false" | "null" | "[" (or ("," or)*)? "]"
                | "length" "(" or ")" | "(" or ")"
    number     := "-"? integer ("." integer)?

``path``, ``integer`` and ``quoted`` are those of paths.py. Whitespace between tokens is free; keywords
are lower case; a comparison takes a single operator (``a < b < c`` is refused: write ``a < b and b < c``);
brackets, parentheses, ``length(`` and ``not`` nest at most 32 deep.

Semantics: evaluating a condition never raises, whatever JSON the context holds.

- A path that finds nothing is null, so a condition may read the output of a step that has not run.
- ``==`` and ``!=`` compare JSON values: ``1 == 1.0``, but ``true != 1`` (booleans are not numbers);
  lists and objects are equal when their elements are.
- ``<``, ``<=``, ``>`` and ``>=`` order two numbers or two strings; anything else gives false.
- ``a in b`` holds when ``a`` is an element of the list ``b``, a substring of the string ``b`` or a key of
  the object ``b``, and is false otherwise; ``a not in b`` is its negation.
- ``length(x)`` is the length of a string, list or object, and null for anything else.
- null, false, 0, "", [] and {} are false, every other value is true. ``not``, ``and`` and ``or`` give
  booleans; ``and`` and ``or`` evaluate their right side only when the left does not decide.
"""

from __future__ import annotations

import dataclasses
import operator
import string
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

from control_plane.planning.paths import Cursor, ParseError, Path
from control_plane.planning.problems import SpecProblem, WorkflowInvalid

_Evaluator: TypeAlias = Callable[[Mapping[str, Any]], Any]
_Test: TypeAlias = Callable[[Any, Any], bool]

_MAX_DEPTH = 32
_SPACE = frozenset(" \t\r\n")
_DIGITS = frozenset(string.digits)
_QUOTES = frozenset("\"'")
_WORD = frozenset(string.ascii_letters + string.digits + "_")
_CONSTANTS: dict[str, bool | None] = {"true": True, "false": False, "null": None}
# isinstance takes tuples in this module: on Python 3.11 a union type is twice as slow, on every evaluation.
_SCALAR_TYPES = frozenset({str, int, float, bool, type(None)})
_ORDERED_TYPES = frozenset({str, int, float})
# Two-character symbols first, so that "<=" is not read as "<".
_SYMBOLS = ("==", "!=", "<=", ">=", "<", ">")


@dataclass(frozen=True, slots=True)
class Condition:
    """A compiled condition: ``text`` as written, ``paths`` every path it reads, in the order written."""

    text: str
    paths: tuple[Path, ...]
    _evaluate: _Evaluator = dataclasses.field(repr=False, compare=False)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """The condition's value in ``context``; never raises."""
        return self._evaluate(context)

    def holds(self, context: Mapping[str, Any]) -> bool:
        """Whether the condition's value in ``context`` is true (see the module docstring); never raises."""
        return bool(self._evaluate(context))


def compile_condition(text: object, field: str) -> Condition:
    """Compile the condition written at ``field``; raises WorkflowInvalid with one problem if it is bad."""
    if not isinstance(text, str):
        raise WorkflowInvalid([SpecProblem(field, f"must be a condition written as a string, not {text!r}")])
    parser = _Parser(text)
    try:
        evaluate = parser.condition()
    except ParseError as exc:
        found = "" if exc.found is None else f", found {exc.found}"
        raise WorkflowInvalid([SpecProblem(field, f"column {exc.pos + 1}: {exc.reason}{found}")]) from None
    return Condition(text, tuple(parser.paths), evaluate)


class _Parser(Cursor):
    """The condition productions around paths.py's ``path``; ``expected`` arguments say what an operand
    missing at that place should have been."""

    __slots__ = ("constants", "depth", "paths")

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.paths: list[Path] = []
        # The value of every evaluator built from literals alone.
        self.constants: dict[_Evaluator, Any] = {}

    def condition(self) -> _Evaluator:
        evaluate = self.disjunction("a value")
        self.skip_space()
        if self.peek():
            self.fail("an operator or the end")
        return evaluate

    def disjunction(self, expected: str) -> _Evaluator:
        terms = [self.conjunction(expected)]
        while self.keyword("or"):
            terms.append(self.conjunction("a value after 'or'"))
        return terms[0] if len(terms) == 1 else _any_of(tuple(terms))

    def conjunction(self, expected: str) -> _Evaluator:
        terms = [self.negation(expected)]
        while self.keyword("and"):
            terms.append(self.negation("a value after 'and'"))
        return terms[0] if len(terms) == 1 else _all_of(tuple(terms))

    def negation(self, expected: str) -> _Evaluator:
        self.skip_space()
        if self.word() != "not":
            return self.comparison(expected)
        with self.nested():
            self.pos += len("not")
            return _not(self.negation("a value after 'not'"))

    def comparison(self, expected: str) -> _Evaluator:
        left = self.operand(expected)
        symbol = self.operator()
        if symbol is None:
            return left
        right = self.operand(f"a value after {symbol!r}")
        self.skip_space()
        second = self.pos
        if self.operator() is not None:
            self.pos = second
            self.fail("'and' or 'or' between two comparisons")
        return _compare(_TESTS[symbol], self.read_only(left), self.read_only(right))

    def read_only(self, evaluate: _Evaluator) -> _Evaluator:
        """``evaluate``, or for a literal list an evaluator of one list built now: comparisons only read it."""
        if evaluate in self.constants:
            return _constant(self.constants[evaluate])
        return evaluate

    def constant(self, value: Any, evaluate: _Evaluator | None = None) -> _Evaluator:
        """An evaluator of ``value``, known to be constant; ``evaluate`` builds it anew if it is mutable."""
        evaluate = evaluate or _constant(value)
        self.constants[evaluate] = value
        return evaluate

    def operator(self) -> str | None:
        """Take a comparison operator if one stands here."""
        for symbol in _SYMBOLS:
            if self.symbol(symbol):
                return symbol
        if self.keyword("in"):
            return "in"
        if not self.keyword("not"):
            return None
        if not self.keyword("in"):
            self.fail("'in' after 'not'")
        return "not in"

    def operand(self, expected: str) -> _Evaluator:
        self.skip_space()
        char = self.peek()
        if char == "$":
            return self.path_operand()
        if char in _QUOTES:
            return self.constant(self.quoted())
        if char == "-" or char in _DIGITS:
            return self.constant(self.number())
        if char == "[":
            return self.list_operand()
        if char == "(":
            return self.group()
        word = self.word()
        if word in _CONSTANTS:
            self.pos += len(word)
            return self.constant(_CONSTANTS[word])
        if word == "length":
            return self.length()
        self.fail(expected)

    def path_operand(self) -> _Evaluator:
        path = self.path()
        self.paths.append(path)
        return _read(path)

    def number(self) -> int | float:
        start = self.pos
        negative = self.take("-")
        whole = self.integer()
        if not self.take("."):
            return -whole if negative else whole
        self.run_of(_DIGITS, "a digit after '.'")
        return float(self.text[start : self.pos])

    def list_operand(self) -> _Evaluator:
        items: list[_Evaluator] = []
        with self.nested():
            self.pos += 1
            if not self.symbol("]"):
                items.append(self.disjunction("a value or ']'"))
                while self.symbol(","):
                    items.append(self.disjunction("a value after ','"))
                self.close("]", "an operator, ',' or ']'")
        evaluate = _list(tuple(items))
        if all(item in self.constants for item in items):
            return self.constant([self.constants[item] for item in items], evaluate)
        return evaluate

    def group(self) -> _Evaluator:
        with self.nested():
            self.pos += 1
            inner = self.disjunction("a value after '('")
            self.close(")", "an operator or ')'")
        return inner

    def length(self) -> _Evaluator:
        with self.nested():
            self.pos += len("length")
            if not self.symbol("("):
                self.fail("'(' after 'length'")
            inner = self.disjunction("a value after 'length('")
            self.close(")", "an operator or ')'")
        return _length(inner)

    @contextmanager
    def nested(self) -> Iterator[None]:
        """Around a production that opens here; bounds the recursion of the parser and of its evaluators."""
        if self.depth == _MAX_DEPTH:
            self.fail(f"at most {_MAX_DEPTH} levels of nesting")
        self.depth += 1
        yield
        self.depth -= 1

    def close(self, bracket: str, expected: str) -> None:
        if not self.symbol(bracket):
            self.fail(expected)

    def skip_space(self) -> None:
        while self.peek() in _SPACE:
            self.pos += 1

    def word(self) -> str:
        """The run of letters, digits and underscores from here, without taking it."""
        end = self.pos
        while end < len(self.text) and self.text[end] in _WORD:
            end += 1
        return self.text[self.pos : end]

    def keyword(self, word: str) -> bool:
        """Take ``word`` if it stands next as a whole word."""
        self.skip_space()
        if self.word() != word:
            return False
        self.pos += len(word)
        return True

    def symbol(self, symbol: str) -> bool:
        """Take ``symbol`` if it stands next."""
        self.skip_space()
        if not self.text.startswith(symbol, self.pos):
            return False
        self.pos += len(symbol)
        return True

    def found(self) -> str:
        word = self.word()
        return repr(word) if word else super().found()


def _constant(value: Any) -> _Evaluator:
    return lambda context: value


def _read(path: Path) -> _Evaluator:
    parts = path.parts

    # Path.evaluate's walk, but nothing found is null rather than an error with a message to build.
    def read(context: Mapping[str, Any]) -> Any:
        value: Any = context
        for part in parts:
            if isinstance(part, str):
                if not isinstance(value, (dict, Mapping)):
                    return None
                value = value.get(part)
            elif isinstance(value, (list, tuple)) and part < len(value):
                value = value[part]
            else:
                return None
        return value

    return read


def _list(items: tuple[_Evaluator, ...]) -> _Evaluator:
    # A new list on every evaluation: the value of a condition may be handed on and changed.
    return lambda context: [item(context) for item in items]


def _length(inner: _Evaluator) -> _Evaluator:
    def length(context: Mapping[str, Any]) -> int | None:
        value = inner(context)
        return len(value) if isinstance(value, (str, list, tuple, dict, Mapping)) else None

    return length


def _not(inner: _Evaluator) -> _Evaluator:
    return lambda context: not inner(context)


# Plain loops rather than any()/all() over a generator: three times faster, on every planning step.


def _any_of(terms: tuple[_Evaluator, ...]) -> _Evaluator:
    def any_of(context: Mapping[str, Any]) -> bool:
        for term in terms:  # noqa: SIM110
            if term(context):
                return True
        return False

    return any_of


def _all_of(terms: tuple[_Evaluator, ...]) -> _Evaluator:
    def all_of(context: Mapping[str, Any]) -> bool:
        for term in terms:  # noqa: SIM110
            if not term(context):
                return False
        return True

    return all_of


def _compare(test: _Test, left: _Evaluator, right: _Evaluator) -> _Evaluator:
    return lambda context: test(left(context), right(context))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(a: Any, b: Any) -> bool:
    """Equality of JSON values (see the module docstring)."""
    kind = type(a)
    # Values of one exact JSON scalar type (bool apart from int) need nothing more than Python's ==.
    if kind is type(b) and kind in _SCALAR_TYPES:
        return bool(a == b)
    return _equal_values(a, b)


def _equal_values(a: Any, b: Any) -> bool:
    """Equality of any two values, walked without recursion so that no nesting of the data can overflow."""
    pending = [(a, b)]
    while pending:
        a, b = pending.pop()
        if a is None or isinstance(a, (str, int, float)):
            if not _equal_scalars(a, b):
                return False
        elif isinstance(a, (list, tuple)):
            if not isinstance(b, (list, tuple)) or len(a) != len(b):
                return False
            pending.extend(zip(a, b, strict=True))
        elif isinstance(a, (dict, Mapping)):
            if not isinstance(b, (dict, Mapping)) or a.keys() != b.keys():
                return False
            pending.extend((a[key], b[key]) for key in a)
        else:
            return False
    return True


def _equal_scalars(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)):
        return _is_number(b) and a == b
    if isinstance(a, str):
        return isinstance(b, str) and a == b
    return b is None


def _unequal(a: Any, b: Any) -> bool:
    return not _equal(a, b)


def _ordering(compare: Callable[[Any, Any], bool]) -> _Test:
    def test(a: Any, b: Any) -> bool:
        kind = type(a)
        if kind is type(b) and kind in _ORDERED_TYPES:
            return compare(a, b)
        if isinstance(a, str):
            return isinstance(b, str) and compare(a, b)
        return _is_number(a) and _is_number(b) and compare(a, b)

    return test


def _contains(needle: Any, haystack: Any) -> bool:
    if isinstance(haystack, str):
        return isinstance(needle, str) and needle in haystack
    if isinstance(haystack, (list, tuple)):
        for item in haystack:  # noqa: SIM110
            if _equal(needle, item):
                return True
        return False
    if isinstance(haystack, (dict, Mapping)):
        return isinstance(needle, str) and needle in haystack
    return False


def _not_contains(needle: Any, haystack: Any) -> bool:
    return not _contains(needle, haystack)


_TESTS: dict[str, _Test] = {
    "==": _equal,
    "!=": _unequal,
    "<": _ordering(operator.lt),
    "<=": _ordering(operator.le),
    ">": _ordering(operator.gt),
    ">=": _ordering(operator.ge),
    "in": _contains,
    "not in": _not_contains,
}
