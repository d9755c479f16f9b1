"""The path and template language of the planners."""

from typing import Any

import pytest

from control_plane.planning import PathError, SpecProblem, WorkflowInvalid, compile_template, parse_path

CONTEXT = {
    "input": {
        "text": "hello world",
        "a": {"b": {"c": 3}},
        "items": [{"id": 7}, {"id": 8}],
        "key with spaces": "spaced",
        'say "hi"': "quoted",
        "my-key": "dashed",
    },
    "steps": {"stats": {"output": {"words": 2}}, "2fa": {"output": "ok"}},
}


@pytest.mark.parametrize(
    ("text", "parts", "value"),
    [
        ("$.input", ("input",), CONTEXT["input"]),
        ("$.input.a.b", ("input", "a", "b"), {"c": 3}),
        ("$.input.items[0]", ("input", "items", 0), {"id": 7}),
        ("$.input.items[1].id", ("input", "items", 1, "id"), 8),
        ('$.input["key with spaces"]', ("input", "key with spaces"), "spaced"),
        ("$.input['key with spaces']", ("input", "key with spaces"), "spaced"),
        (r'$.input["say \"hi\""]', ("input", 'say "hi"'), "quoted"),
        ("$.input.my-key", ("input", "my-key"), "dashed"),
        ("$.steps.stats.output.words", ("steps", "stats", "output", "words"), 2),
        ("$.steps.2fa.output", ("steps", "2fa", "output"), "ok"),
    ],
)
def test_a_path_parses_into_keys_and_indexes_and_reads_the_context(
    text: str, parts: tuple[str | int, ...], value: Any
) -> None:
    path = parse_path(text, "f")

    assert path.text == text
    assert path.parts == parts
    assert path.evaluate(CONTEXT) == value


def test_a_quoted_key_may_escape_a_backslash() -> None:
    assert parse_path(r"$.input['a\\b']", "f").parts == ("input", "a\\b")


def test_a_path_knows_the_step_it_reads() -> None:
    assert parse_path("$.steps.stats.output.words", "f").step == "stats"
    assert parse_path("$.input.steps", "f").step is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$.input.missing", "$.input.missing: no key 'missing'"),
        ("$.input.items[2]", "$.input.items[2]: no index 2 in a list of 2"),
        ("$.input.items.id", "$.input.items.id: no key 'id' in a list"),
        ("$.input.text[0]", "$.input.text[0]: no index 0 in a string"),
        ("$.input.a.b.c.d", "$.input.a.b.c.d: no key 'd' in a number"),
        ("$.steps.other.output", "$.steps.other.output: no key 'other'"),
    ],
)
def test_a_path_that_finds_nothing_raises_a_path_error_naming_it(text: str, message: str) -> None:
    with pytest.raises(PathError) as raised:
        parse_path(text, "f").evaluate(CONTEXT)

    assert str(raised.value) == message


@pytest.mark.parametrize(
    "text",
    [
        "input",
        "$",
        "$input",
        "$[0]",
        "$.",
        "$.input.",
        "$.input..a",
        "$.input[",
        "$.input[]",
        "$.input[0",
        "$.input[-1]",
        "$.input[x]",
        '$.input["a]',
        r'$.input["a\n"]',
        "$.input a",
        "$.input.a b",
        "$.input.a+b",
        "$.foo",
        "$.steps",
        "$.steps.stats",
        "$.steps.stats.input",
        "$.steps[0].output",
    ],
)
def test_every_syntax_error_names_the_field_and_the_path(text: str) -> None:
    with pytest.raises(WorkflowInvalid) as raised:
        parse_path(text, "steps[3].input.text")

    [problem] = raised.value.problems
    assert problem.field == "steps[3].input.text"
    assert repr(text) in problem.detail


def test_a_syntax_error_says_what_was_expected_and_where() -> None:
    with pytest.raises(WorkflowInvalid) as raised:
        parse_path("$.input[x]", "f")

    assert raised.value.problems[0].detail == (
        "bad path '$.input[x]': expected an index or a quoted key at character 9, found 'x'"
    )


def test_a_template_renders_paths_and_keeps_literals() -> None:
    template = compile_template(
        {
            "text": "$.input.text",
            "words": "$.steps.stats.output.words",
            "first": ["$.input.items[0].id", 1, 2.5, True, None, "plain"],
            "price": "$$.99",
            "dollar": "$5",
            "nested": {"deep": "$.input.a.b"},
        },
        "steps[0].input",
    )

    assert template.render(CONTEXT) == {
        "text": "hello world",
        "words": 2,
        "first": [7, 1, 2.5, True, None, "plain"],
        "price": "$.99",
        "dollar": "$5",
        "nested": {"deep": {"c": 3}},
    }


@pytest.mark.parametrize(("value", "rendered"), [("$$$.input", "$$.input"), ("$$", "$"), ("$", "$"), (7, 7)])
def test_a_template_that_is_not_a_path_stands_for_itself(value: Any, rendered: Any) -> None:
    template = compile_template(value, "f")

    assert template.render(CONTEXT) == rendered
    assert template.paths == ()


def test_a_template_lists_each_path_with_its_field_and_the_steps_it_reads() -> None:
    template = compile_template(
        {"a": "$.steps.stats.output", "b c": ["$.input", "$.steps.lang.output.code"]}, "steps[1].input"
    )

    assert [(field, path.text) for field, path in template.paths] == [
        ("steps[1].input.a", "$.steps.stats.output"),
        ('steps[1].input["b c"][0]', "$.input"),
        ('steps[1].input["b c"][1]', "$.steps.lang.output.code"),
    ]
    assert template.step_references() == {"stats", "lang"}


def test_each_render_builds_new_containers() -> None:
    template = compile_template({"list": [1], "map": {"k": "v"}}, "f")
    first = template.render(CONTEXT)
    first["list"].append(2)
    first["map"]["k"] = "changed"

    assert template.render(CONTEXT) == {"list": [1], "map": {"k": "v"}}


def test_rendering_a_path_that_finds_nothing_raises_a_path_error() -> None:
    template = compile_template({"x": ["$.input.nope"]}, "f")

    with pytest.raises(PathError, match=r"^\$\.input\.nope: no key 'nope'$"):
        template.render(CONTEXT)


def test_compiling_reports_every_problem_with_its_field() -> None:
    with pytest.raises(WorkflowInvalid) as raised:
        compile_template({"a": "$.input.", "b": ["ok", "$.nope"], 3: "x", "c": {1, 2}}, "steps[0].input")

    assert [problem.field for problem in raised.value.problems] == [
        "steps[0].input.a",
        "steps[0].input.b[1]",
        "steps[0].input.3",
        "steps[0].input.c",
    ]
    assert raised.value.problems[2].detail == "a key must be a string"
    assert raised.value.problems[3].detail == "not a JSON value (set)"


def test_the_error_lists_every_problem() -> None:
    error = WorkflowInvalid([SpecProblem("steps[0].name", "required"), SpecProblem("output", "bad")])

    assert str(error) == "invalid workflow:\n  steps[0].name: required\n  output: bad"
