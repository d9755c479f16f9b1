"""The condition language of the planners."""

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from control_plane.planning.expr import Condition, compile_condition
from control_plane.planning.problems import WorkflowInvalid

CONTEXT: dict[str, Any] = {
    "input": {
        "mode": "final",
        "score": 9,
        "tags": ["a", "b"],
        "flag": True,
        "none": None,
        "text": "hello world",
        "obj": {"k": 1},
        "key with spaces": 3,
        "items": [{"id": 7}],
        "same": {"x": 1, "y": [1, True]},
        "alike": {"y": [1.0, True], "x": 1.0},
    },
    "steps": {"review": {"output": {"score": 8, "verdict": "ok"}}},
}


class _RecordingMapping(Mapping[str, Any]):
    """A context that records the top-level keys read from it."""

    def __init__(self, data: Mapping[str, Any], keys: list[str]) -> None:
        self.data = data
        self.keys_read = keys

    def __getitem__(self, key: str) -> Any:
        self.keys_read.append(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def value_of(text: str, context: Mapping[str, Any] = CONTEXT) -> Any:
    return compile_condition(text, "f").evaluate(context)


def problem_of(text: Any, field: str = "f") -> str:
    with pytest.raises(WorkflowInvalid) as raised:
        compile_condition(text, field)
    [problem] = raised.value.problems
    assert problem.field == field
    return problem.detail


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-2", -2),
        ("2.5", 2.5),
        ("-0.25", -0.25),
        ("007", 7),
        ("'it'", "it"),
        ('"it"', "it"),
        (r"'it\'s'", "it's"),
        (r'"a\\b"', "a\\b"),
        ("''", ""),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[]", []),
        ("[1, 'a', [true, null]]", [1, "a", [True, None]]),
        ("[$.input.score, 1 < 2]", [9, True]),
        ("length('abc')", 3),
        ("(1)", 1),
        ("((('x')))", "x"),
        ("$.input.mode", "final"),
        ("$.input.items[0].id", 7),
        ('$.input["key with spaces"]', 3),
        ("$.input['key with spaces']", 3),
        ("$.steps.review.output.score", 8),
        ("$.input.tags[1]", "b"),
    ],
)
def test_every_kind_of_operand_parses_to_its_value(text: str, value: Any) -> None:
    result = value_of(text)

    assert result == value
    assert type(result) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2 == 2", True),
        ("2 != 2", False),
        ("1 < 2", True),
        ("2 <= 2", True),
        ("1 > 2", False),
        ("1 >= 2", False),
        ("'b' in $.input.tags", True),
        ("'b' not in $.input.tags", False),
        ("not true", False),
        ("true and false", False),
        ("false or true", True),
        ("true and true and 1", True),
        ("false or false or 0", False),
    ],
)
def test_every_operator_parses(text: str, value: bool) -> None:
    assert value_of(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true or false and false", True),
        ("(true or false) and false", False),
        ("not 1 == 2", True),
        ("not false and false", False),
        ("not (false and false)", True),
        ("not not true", True),
        ("1 == 1 and 2 == 3 or 4 == 4", True),
    ],
)
def test_or_binds_loosest_then_and_then_not_then_comparisons(text: str, value: bool) -> None:
    assert value_of(text) is value


@pytest.mark.parametrize(
    "text",
    [
        "$.input.score>=9and$.input.flag",
        "  $.input.score >= 9   and   $.input.flag  ",
        "\n$.input.score\t>=\r\n9 and\n$.input.flag",
        "($.input.score>=9)and(not$.input.none)",
        "$.input.mode not\n in['a','b'] and length ( $.input.tags )==2",
    ],
)
def test_whitespace_between_tokens_is_free(text: str) -> None:
    assert value_of(text) is True


def test_a_path_ends_at_anything_that_is_not_one_of_its_segments() -> None:
    assert value_of("$.input.tags[0]=='a'") is True
    assert value_of("[$.input.score]") == [9]
    assert value_of("length($.input.obj)") == 1


def test_a_condition_keeps_its_text_and_every_path_it_reads_in_order() -> None:
    text = "$.input.score > $.steps.review.output.score or $.input.tags[0] in [$.input.mode]"

    condition = compile_condition(text, "f")

    assert condition.text == text
    assert [path.text for path in condition.paths] == [
        "$.input.score",
        "$.steps.review.output.score",
        "$.input.tags[0]",
        "$.input.mode",
    ]
    assert [path.step for path in condition.paths] == [None, "review", None, None]


def test_a_condition_of_literals_reads_no_paths() -> None:
    assert compile_condition("1 in [1, 2]", "f").paths == ()


def test_two_compilations_of_the_same_text_are_equal() -> None:
    assert compile_condition("$.input.a == 1", "f") == compile_condition("$.input.a == 1", "g")
    assert compile_condition("$.input.a == 1", "f") != compile_condition("$.input.a == 2", "f")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("", "column 1: expected a value, found the end"),
        ("   ", "column 4: expected a value, found the end"),
        ("$.input.score ==", "column 17: expected a value after '==', found the end"),
        ("$.input.score == ", "column 18: expected a value after '==', found the end"),
        ("1 != )", "column 6: expected a value after '!=', found ')'"),
        ("1 <", "column 4: expected a value after '<', found the end"),
        ("1 <= ]", "column 6: expected a value after '<=', found ']'"),
        ("1 >", "column 4: expected a value after '>', found the end"),
        ("1 >=", "column 5: expected a value after '>=', found the end"),
        ("1 in", "column 5: expected a value after 'in', found the end"),
        ("1 not in", "column 9: expected a value after 'not in', found the end"),
        ("true and", "column 9: expected a value after 'and', found the end"),
        ("true or or", "column 9: expected a value after 'or', found 'or'"),
        ("not", "column 4: expected a value after 'not', found the end"),
        ("not in [1]", "column 5: expected a value after 'not', found 'in'"),
        ("1 2", "column 3: expected an operator or the end, found '2'"),
        ("1 = 1", "column 3: expected an operator or the end, found '='"),
        ("1 AND 2", "column 3: expected an operator or the end, found 'AND'"),
        ("true andy", "column 6: expected an operator or the end, found 'andy'"),
        ("1 < 2 < 3", "column 7: expected 'and' or 'or' between two comparisons, found '<'"),
        ("1 == 1 in [1]", "column 8: expected 'and' or 'or' between two comparisons, found 'in'"),
        ("1 == 1 not in [1]", "column 8: expected 'and' or 'or' between two comparisons, found 'not'"),
        ("$.input.tags not 1", "column 18: expected 'in' after 'not', found '1'"),
        ("(", "column 2: expected a value after '(', found the end"),
        ("(1", "column 3: expected an operator or ')', found the end"),
        ("(1]", "column 3: expected an operator or ')', found ']'"),
        ("[", "column 2: expected a value or ']', found the end"),
        ("[1,", "column 4: expected a value after ',', found the end"),
        ("[1,]", "column 4: expected a value after ',', found ']'"),
        ("[1 2]", "column 4: expected an operator, ',' or ']', found '2'"),
        ("length", "column 7: expected '(' after 'length', found the end"),
        ("length 'a'", "column 8: expected '(' after 'length', found \"'\""),
        ("length(", "column 8: expected a value after 'length(', found the end"),
        ("length(1", "column 9: expected an operator or ')', found the end"),
        ("TRUE", "column 1: expected a value, found 'TRUE'"),
        ("lengthy", "column 1: expected a value, found 'lengthy'"),
        ("x == 1", "column 1: expected a value, found 'x'"),
        ("#", "column 1: expected a value, found '#'"),
        ("'abc", "column 5: expected the closing ', found the end"),
        ('"abc', 'column 5: expected the closing ", found the end'),
        (r"'a\b'", "column 4: expected \\ or ' after a backslash, found 'b'"),
        ("1.", "column 3: expected a digit after '.', found the end"),
        ("1.x", "column 3: expected a digit after '.', found 'x'"),
        ("-", "column 2: expected a number, found the end"),
        ("- 1", "column 2: expected a number, found ' '"),
        ("-x", "column 2: expected a number, found 'x'"),
        ("$", "column 2: expected '.' after '$', found the end"),
        ("$.", "column 3: expected a key, found the end"),
        ("$.input. == 1", "column 9: expected a key, found ' '"),
        ("$.input[x]", "column 9: expected an index or a quoted key, found 'x'"),
        ("$.input[0", "column 10: expected ']', found the end"),
        ("$.foo == 1", "column 1: a path starts with $.input or $.steps"),
        ("1 == $.steps.review", "column 6: a step's output is read as $.steps.NAME.output"),
        ("1 in [2, $.steps.review.input]", "column 10: a step's output is read as $.steps.NAME.output"),
    ],
)
def test_every_syntax_error_names_its_column_and_what_was_expected(text: str, detail: str) -> None:
    assert problem_of(text) == detail


def test_the_problem_stands_at_the_field_the_condition_was_read_from() -> None:
    problem_of("1 ==", field="steps[2].when")


def test_a_number_has_at_most_a_hundred_digits() -> None:
    assert value_of("9" * 100) == int("9" * 100)
    assert problem_of("1 == " + "9" * 101) == f"column 6: expected a number of at most 100 digits, found '{'9' * 101}'"


@pytest.mark.parametrize(
    ("opening", "closing", "levels"),
    [("(", ")", 1), ("[", "]", 1), ("length(", ")", 1), ("not ", "", 1), ("not (", ")", 2)],
)
def test_nesting_stops_at_thirty_two_levels(opening: str, closing: str, levels: int) -> None:
    most = 32 // levels
    compile_condition(opening * most + "1" + closing * most, "f").evaluate(CONTEXT)

    detail = problem_of(opening * (most + 1) + "1" + closing * (most + 1))

    assert detail.startswith(f"column {len(opening * most) + 1}: expected at most 32 levels of nesting, found ")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (5, "must be a condition written as a string, not 5"),
        (True, "must be a condition written as a string, not True"),
        (None, "must be a condition written as a string, not None"),
        (["$.input"], "must be a condition written as a string, not ['$.input']"),
    ],
)
def test_a_condition_that_is_not_a_string_is_a_problem(text: Any, detail: str) -> None:
    assert problem_of(text) == detail


@pytest.mark.parametrize(
    "text",
    [
        "$.input.missing",
        "$.input.missing.deeper[0]",
        "$.steps.other.output.score",
        "$.steps.review.output.missing",
        "$.input.tags[2]",
        "$.input.tags.a",
        "$.input.text[0]",
        "$.input.text.a",
        "$.input.obj[0]",
        "$.input.score.a",
        "$.input.none.a",
        "$.input.flag[0]",
    ],
)
def test_a_path_that_finds_nothing_is_null(text: str) -> None:
    assert value_of(text) is None
    assert value_of(f"{text} == null") is True


def test_a_path_reads_a_context_of_any_mappings_and_tuples() -> None:
    context = {"input": _RecordingMapping({"pair": (1, {"k": "v"})}, [])}

    assert value_of("$.input.pair[1].k", context) == "v"
    assert value_of("$.input.pair == [1, $.input.pair[1]]", context) is True


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 == 1.0", True),
        ("-0.0 == 0", True),
        ("'a' == 'a'", True),
        ("'a' == 'A'", False),
        ("null == null", True),
        ("true == true", True),
        ("true == 1", False),
        ("true != 1", True),
        ("1 == true", False),
        ("false == 0", False),
        ("false == null", False),
        ("0 == null", False),
        ("'' == null", False),
        ("'1' == 1", False),
        ("[] == []", True),
        ("[1, true] == [1.0, true]", True),
        ("[1] == [true]", False),
        ("[1, 2] == [2, 1]", False),
        ("[1] == [1, 1]", False),
        ("[[1]] == [[1.0]]", True),
        ("[] == null", False),
        ("$.input.same == $.input.alike", True),
        ("$.input.same != $.input.alike", False),
        ("$.input.same == $.input.obj", False),
        ("$.input.obj == [['k', 1]]", False),
        ("$.input.obj == 'k'", False),
        ("$.input.tags == ['a', 'b']", True),
    ],
)
def test_equality_compares_json_values_and_keeps_booleans_apart_from_numbers(text: str, value: bool) -> None:
    assert value_of(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 < 2", True),
        ("1 < 1.5", True),
        ("2.5 >= 2", True),
        ("-1 > -2", True),
        ("'a' < 'b'", True),
        ("'b' <= 'a'", False),
        ("'abc' > 'ab'", True),
        ("1 < '2'", False),
        ("'1' < 2", False),
        ("null < 1", False),
        ("1 >= null", False),
        ("false < true", False),
        ("true > 0", False),
        ("[1] < [2]", False),
        ("$.input.obj <= $.input.obj", False),
        ("$.input.missing < 1", False),
        ("not (1 < '2')", True),
    ],
)
def test_ordering_holds_only_between_two_numbers_or_two_strings(text: str, value: bool) -> None:
    assert value_of(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'b' in $.input.tags", True),
        ("'z' in $.input.tags", False),
        ("1.0 in [1]", True),
        ("true in [1]", False),
        ("1 in [true]", False),
        ("null in [null]", True),
        ("[1] in [[1.0], 2]", True),
        ("$.input.alike in [$.input.same]", True),
        ("'ell' in 'hello'", True),
        ("'' in 'hello'", True),
        ("'x' in 'hello'", False),
        ("1 in '1'", False),
        ("'k' in $.input.obj", True),
        ("'z' in $.input.obj", False),
        ("1 in $.input.obj", False),
        ("1 in 1", False),
        ("'a' in null", False),
        ("'a' in $.input.missing", False),
        ("'z' not in $.input.tags", True),
        ("'b' not in $.input.tags", False),
        ("1 not in 1", True),
        ("'a' not in null", True),
    ],
)
def test_in_finds_list_elements_substrings_and_object_keys(text: str, value: bool) -> None:
    assert value_of(text) is value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("length('abc')", 3),
        ("length('')", 0),
        ("length($.input.tags)", 2),
        ("length([])", 0),
        ("length($.input.obj)", 1),
        ("length(5)", None),
        ("length(true)", None),
        ("length(null)", None),
        ("length($.input.missing)", None),
        ("length(length('ab'))", None),
        ("length($.input.tags) == 2", True),
    ],
)
def test_length_measures_strings_lists_and_objects_and_is_null_otherwise(text: str, value: Any) -> None:
    assert value_of(text) == value


@pytest.mark.parametrize("value", [None, False, 0, 0.0, "", [], {}])
def test_null_false_zero_and_empty_values_do_not_hold(value: Any) -> None:
    condition = compile_condition("$.input", "f")

    assert condition.holds({"input": value}) is False
    assert compile_condition("not $.input", "f").evaluate({"input": value}) is True


@pytest.mark.parametrize("value", [True, 1, -1, 0.5, "0", "false", " ", [0], [None], {"a": None}])
def test_every_other_value_holds(value: Any) -> None:
    assert compile_condition("$.input", "f").holds({"input": value}) is True


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1 and 'x'", True),
        ("1 and ''", False),
        ("0 or ''", False),
        ("0 or [1]", True),
        ("not 0", True),
        ("not 'x'", False),
    ],
)
def test_not_and_and_or_give_booleans(text: str, value: bool) -> None:
    assert value_of(text) is value


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("false and $.steps.review.output", []),
        ("true or $.steps.review.output", []),
        ("$.input.none and $.steps.review.output", ["input"]),
        ("$.input.flag or $.steps.review.output", ["input"]),
        ("$.input.flag and $.steps.review.output", ["input", "steps"]),
        ("$.input.none or $.steps.review.output", ["input", "steps"]),
    ],
)
def test_and_and_or_evaluate_their_right_side_only_when_the_left_does_not_decide(text: str, read: list[str]) -> None:
    keys: list[str] = []

    compile_condition(text, "f").evaluate(_RecordingMapping(CONTEXT, keys))

    assert keys == read


def test_each_evaluation_of_a_list_builds_a_new_list() -> None:
    condition = compile_condition("[1, [2]]", "f")
    first = condition.evaluate(CONTEXT)
    first.append(3)
    first[1].append(4)

    assert condition.evaluate(CONTEXT) == [1, [2]]


def test_a_literal_list_read_by_comparisons_keeps_its_value_across_evaluations() -> None:
    condition = compile_condition("$.input.tags == ['a', 'b'] and 'a' in ['a']", "f")

    assert [condition.holds(CONTEXT) for _ in range(3)] == [True, True, True]


def test_equality_walks_data_nested_deeper_than_the_interpreter_recursion_limit() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = [deep]
    context = {"input": {"a": deep, "b": deep}}

    assert compile_condition("$.input.a == $.input.b", "f").holds(context) is True
    assert compile_condition("$.input.a == [1]", "f").holds(context) is False


# Random JSON over a few keys, so that random paths often find something.
_KEYS = ("a", "b", "c")
_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3)
)
_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), children, max_size=3),
    max_leaves=12,
)
_CONTEXTS = st.fixed_dictionaries(
    {
        "input": _JSON,
        "steps": st.dictionaries(st.sampled_from(_KEYS), st.fixed_dictionaries({"output": _JSON}), max_size=3),
    }
)

_SEGMENTS = st.lists(st.sampled_from([".a", ".b", ".c", "[0]", "[1]", '["a"]', "['b']"]), max_size=3).map("".join)
_PATHS = st.builds(
    lambda root, segments: root + segments,
    st.sampled_from(["$.input", "$.steps.a.output", "$.steps.b.output"]),
    _SEGMENTS,
)
_LITERALS = st.sampled_from(["0", "1", "-1", "2.5", "'a'", '"b"', "''", "true", "false", "null", "[]", "[1, 'a']"])
_OPERANDS = _PATHS | _LITERALS
_BINARY = ["==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"]


def _expressions(depth: int) -> st.SearchStrategy[str]:
    """Well-formed conditions; every part is parenthesised, so comparisons never chain."""
    if depth == 0:
        return _OPERANDS
    inner = _expressions(depth - 1)
    return st.one_of(
        _OPERANDS,
        st.builds(lambda a, op, b: f"({a}) {op} ({b})", inner, st.sampled_from(_BINARY), inner),
        inner.map(lambda a: f"not ({a})"),
        inner.map(lambda a: f"length({a})"),
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    )


_EXPRESSIONS = _expressions(3)


@given(_EXPRESSIONS, _CONTEXTS)
def test_a_condition_evaluates_the_same_every_time_and_never_raises(text: str, context: dict[str, Any]) -> None:
    condition = compile_condition(text, "f")

    value = condition.evaluate(context)

    assert condition.evaluate(context) == value
    assert compile_condition(text, "f").evaluate(context) == value
    assert condition.holds(context) is bool(value)
    assert all(path.text in text for path in condition.paths)


@given(_EXPRESSIONS, _CONTEXTS)
def test_not_not_is_the_truth_of_a_condition(text: str, context: dict[str, Any]) -> None:
    holds = compile_condition(text, "f").holds(context)

    assert compile_condition(f"not not ({text})", "f").evaluate(context) is holds
    assert compile_condition(f"not ({text})", "f").evaluate(context) is (not holds)


@given(_EXPRESSIONS, _CONTEXTS)
def test_every_value_equals_itself_and_is_in_a_list_of_itself(text: str, context: dict[str, Any]) -> None:
    assert compile_condition(f"({text}) == ({text})", "f").holds(context) is True
    assert compile_condition(f"({text}) != ({text})", "f").holds(context) is False
    assert compile_condition(f"({text}) in [0, ({text})]", "f").holds(context) is True


def _tagged(value: Any) -> Any:
    """The value with booleans told apart from numbers, so that Python's == is JSON equality."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, list):
        return [_tagged(item) for item in value]
    if isinstance(value, dict):
        return {key: _tagged(item) for key, item in value.items()}
    return value


@given(_JSON, _JSON)
def test_equality_is_json_equality(a: Any, b: Any) -> None:
    context = {"input": {"a": a, "b": b}}

    assert compile_condition("$.input.a == $.input.b", "f").holds(context) is (_tagged(a) == _tagged(b))
    assert compile_condition("$.input.a in [$.input.b]", "f").holds(context) is (_tagged(a) == _tagged(b))


def _floated(value: Any) -> Any:
    """The value with every integer written as a float."""
    if isinstance(value, list):
        return [_floated(item) for item in value]
    if isinstance(value, dict):
        return {key: _floated(item) for key, item in value.items()}
    return float(value) if type(value) is int else value


@given(_JSON)
def test_integers_equal_the_floats_of_the_same_value_at_any_depth(a: Any) -> None:
    context = {"input": {"a": a, "b": _floated(a)}}

    assert compile_condition("$.input.a == $.input.b", "f").holds(context) is (_tagged(a) == _tagged(_floated(a)))


_NUMBERS = st.integers() | st.floats(allow_nan=False)
_STRINGS = st.text(max_size=3)


@given(st.tuples(_NUMBERS, _NUMBERS) | st.tuples(_STRINGS, _STRINGS))
def test_two_numbers_or_two_strings_are_ordered_as_in_python(pair: tuple[Any, Any]) -> None:
    a, b = pair
    context = {"input": {"a": a, "b": b}}

    for symbol, expected in (("<", a < b), ("<=", a <= b), (">", a > b), (">=", a >= b)):
        assert compile_condition(f"$.input.a {symbol} $.input.b", "f").holds(context) is expected


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@given(_JSON, _JSON)
def test_any_other_two_values_are_not_ordered(a: Any, b: Any) -> None:
    assume(not (isinstance(a, str) and isinstance(b, str)) and not (_is_number(a) and _is_number(b)))
    context = {"input": {"a": a, "b": b}}

    condition = "$.input.a < $.input.b or $.input.a <= $.input.b or $.input.a > $.input.b or $.input.a >= $.input.b"
    assert compile_condition(condition, "f").holds(context) is False


@given(st.text(alphabet=st.sampled_from([*"$.[]()'\"\\,-01 <=>!aeinotrulsgdhf_", "\n", "é"]), max_size=30))
def test_any_text_compiles_or_is_refused_with_a_column(text: str) -> None:
    try:
        condition = compile_condition(text, "f")
    except WorkflowInvalid as exc:
        [problem] = exc.problems
        column = int(problem.detail.removeprefix("column ").partition(":")[0])
        assert 1 <= column <= len(text) + 1
    else:
        assert isinstance(condition, Condition)
        condition.evaluate(CONTEXT)


@given(st.text(max_size=40))
def test_any_unicode_text_compiles_or_is_refused(text: str) -> None:
    with contextlib.suppress(WorkflowInvalid):
        compile_condition(text, "f").evaluate(CONTEXT)
