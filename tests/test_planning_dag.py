"""The DAG planner: checking workflow documents and deciding which steps to start."""

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_plane.planning import (
    DagWorkflow,
    Decision,
    RunOutcome,
    StepInputError,
    StepState,
    WorkflowInvalid,
    decide,
    parse_dag,
)

RUN_INPUT = {"text": "one two three", "lang": "en"}


def step(name: str, *needs: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": "echo", **({"needs": list(needs)} if needs else {}), **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> DagWorkflow:
    return parse_dag({"name": "wf", "version": "1.0.0", "kind": "dag", "steps": list(steps), **fields})


def done(output: Any = None) -> StepState:
    return StepState("succeeded", output)


def started(decision: Decision) -> list[str]:
    return [start.step.name for start in decision.start]


def problems_of(*steps: Any, **fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowInvalid) as raised:
        workflow(*steps, **fields)
    return [(problem.field, problem.detail) for problem in raised.value.problems]


DIAMOND = workflow(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))


def test_a_diamond_fans_out_then_in() -> None:
    plan = [
        ({}, ["a"]),
        ({"a": StepState("queued")}, []),
        ({"a": StepState("running")}, []),
        ({"a": done()}, ["b", "c"]),
        ({"a": done(), "b": StepState("running"), "c": StepState("queued")}, []),
        ({"a": done(), "b": done(), "c": StepState("running")}, []),
        ({"a": done(), "b": done(), "c": done()}, ["d"]),
        ({"a": done(), "b": done(), "c": done(), "d": StepState("running")}, []),
    ]
    for states, expected in plan:
        decision = decide(DIAMOND, RUN_INPUT, states)
        assert (started(decision), decision.outcome) == (expected, None), states

    final = decide(DIAMOND, RUN_INPUT, {"a": done(1), "b": done(2), "c": done(3), "d": done(4)})
    assert final == Decision((), RunOutcome("succeeded", 4, None))


def test_a_step_starts_only_when_all_its_needs_succeeded() -> None:
    decision = decide(DIAMOND, RUN_INPUT, {"a": done(), "b": done(), "c": StepState("running")})

    assert "d" not in started(decision)


def test_a_step_with_a_recorded_state_is_not_started_again() -> None:
    decision = decide(DIAMOND, RUN_INPUT, {"a": done(), "b": StepState("queued")})

    assert started(decision) == ["c"]


def test_inputs_are_built_from_the_run_input_and_earlier_outputs() -> None:
    wf = workflow(
        step("stats", input={"text": "$.input.text"}),
        step("whole"),
        step("report", "stats", input={"words": "$.steps.stats.output.words", "lang": "$.input.lang"}),
    )

    first = decide(wf, RUN_INPUT, {})
    then = decide(wf, RUN_INPUT, {"stats": done({"words": 3}), "whole": StepState("running")})

    assert [(s.step.name, s.input) for s in first.start] == [
        ("stats", {"text": "one two three"}),
        ("whole", RUN_INPUT),
    ]
    assert [(s.step.name, s.input) for s in then.start] == [("report", {"words": 3, "lang": "en"})]


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ("failed", "exit status 1", "step 'b' failed: exit status 1"),
        ("dead", "3 attempts timed out", "step 'b' dead: 3 attempts timed out"),
        ("cancelled", None, "step 'b' cancelled"),
    ],
)
def test_a_step_that_does_not_succeed_fails_the_run_at_once(state: str, error: str | None, message: str) -> None:
    # c is ready to start, but the run is already lost.
    decision = decide(DIAMOND, RUN_INPUT, {"a": done(), "b": StepState(state, error=error)})

    assert decision == Decision((), RunOutcome("failed", None, message))


def test_a_step_whose_input_cannot_be_rendered_fails_the_run() -> None:
    wf = workflow(step("a"), step("b", "a", input="$.steps.a.output.missing"), step("c", "a"))

    decision = decide(wf, RUN_INPUT, {"a": done({})})

    assert decision == Decision(
        (),
        RunOutcome("failed", None, "step 'b' input: $.steps.a.output.missing: no key 'missing'"),
        StepInputError("b", "$.steps.a.output.missing: no key 'missing'"),
    )


def test_an_output_that_cannot_be_rendered_fails_the_run() -> None:
    wf = workflow(step("a"), output="$.steps.a.output[0]")

    decision = decide(wf, RUN_INPUT, {"a": done("text")})

    assert decision == Decision((), RunOutcome("failed", None, "output: $.steps.a.output[0]: no index 0 in a string"))


def test_the_output_template_is_rendered_when_every_step_succeeded() -> None:
    wf = workflow(step("a"), step("b"), output={"first": "$.steps.a.output", "lang": "$.input.lang"})

    decision = decide(wf, RUN_INPUT, {"a": done(1), "b": done(2)})

    assert decision.outcome == RunOutcome("succeeded", {"first": 1, "lang": "en"}, None)


def test_by_default_the_output_is_that_of_the_only_sink() -> None:
    decision = decide(DIAMOND, RUN_INPUT, {name: done(name.upper()) for name in "abcd"})

    assert decision.outcome == RunOutcome("succeeded", "D", None)


def test_by_default_the_output_maps_each_sink_to_its_output_in_document_order() -> None:
    wf = workflow(step("z", "a"), step("a"), step("m", "a"))

    decision = decide(wf, RUN_INPUT, {name: done(name.upper()) for name in "zam"})

    assert decision.outcome is not None
    assert list(decision.outcome.output.items()) == [("z", "Z"), ("m", "M")]


def test_steps_come_in_topological_order_with_ties_in_document_order() -> None:
    wf = workflow(step("report", "b", "a"), step("b", "c"), step("a"), step("c"), step("lone"))

    assert [s.name for s in wf.steps] == ["a", "c", "b", "report", "lone"]


def test_a_step_reads_its_tool_queue_and_needs_with_defaults() -> None:
    wf = workflow(step("a", tool="text-stats@1.0.0", queue="gpu"), step("b", "a", tool="summarize"))

    a, b = wf.steps
    assert (a.tool, a.tool_version, a.queue, a.needs) == ("text-stats", "1.0.0", "gpu", ())
    assert (b.tool, b.tool_version, b.queue, b.needs) == ("summarize", None, "default", ("a",))
    assert wf.tool_refs() == {("text-stats", "1.0.0"), ("summarize", None)}


def test_an_input_of_null_is_a_literal_null() -> None:
    wf = workflow(step("a", input=None))

    assert decide(wf, RUN_INPUT, {}).start[0].input is None


def test_an_unknown_step_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown step state 'done'"):
        StepState("done")


def test_the_steps_must_be_a_non_empty_list_of_mappings() -> None:
    assert problems_of() == [("steps", "must have at least one step")]
    assert problems_of(steps="a") == [("steps", "must be a list of steps")]
    assert problems_of(steps=None) == [("steps", "required")]
    assert problems_of(step("a"), "b") == [("steps[1]", "a step must be a mapping")]


@pytest.mark.parametrize(
    ("bad_step", "field", "detail"),
    [
        ({"tool": "echo"}, "steps[1].name", "required"),
        (step("Bad"), "steps[1].name", "must be a step name matching ^[a-z0-9][a-z0-9_-]{0,62}$, not 'Bad'"),
        (step("x" * 64), "steps[1].name", "must be a step name"),
        ({"name": 7, "tool": "echo"}, "steps[1].name", "not 7"),
        ({"name": "b"}, "steps[1].tool", "required"),
        (step("b", tool="echo@"), "steps[1].tool", "must be a tool as name@version or name"),
        (step("b", tool="Echo@1"), "steps[1].tool", "not 'Echo@1'"),
        (step("b", queue="a_b"), "steps[1].queue", "must be a queue name matching ^[a-z0-9][a-z0-9-]{0,62}$"),
        (step("b", needs="a"), "steps[1].needs", "must be a list of step names"),
        (step("b", needs=["a", 3]), "steps[1].needs[1]", "must be a step name"),
        (step("b", "a", "nope"), "steps[1].needs[1]", "unknown step 'nope'"),
        (step("b", "b"), "steps[1].needs[0]", "a step cannot need itself"),
        (step("b", "a", "a"), "steps[1].needs[1]", "'a' is listed twice"),
        (step("a"), "steps[1].name", "'a' is already steps[0]"),
        (step("b", retries=3), "steps[1].retries", "unknown key; a step has name, tool, queue, needs, input"),
        (step("b", input={"t": ["$.input["]}), "steps[1].input.t[0]", "bad path '$.input['"),
        (step("b", input="$.steps.nope.output"), "steps[1].input", "unknown step 'nope'"),
        (
            step("b", "a", input={"me": "$.steps.b.output"}),
            "steps[1].input.me",
            "a step cannot read its own output",
        ),
    ],
)
def test_each_problem_in_a_step_is_reported_at_its_field(bad_step: Any, field: str, detail: str) -> None:
    [(found_field, found_detail)] = problems_of(step("a"), bad_step)

    assert found_field == field
    assert detail in found_detail


def test_an_input_may_read_only_steps_it_needs_directly_or_through_other_needs() -> None:
    problems = problems_of(
        step("a"),
        step("b", "a"),
        step("c", "b", input={"grand": "$.steps.a.output", "parent": "$.steps.b.output"}),
        step("d", input={"x": ["$.steps.c.output"]}),
    )

    assert problems == [("steps[3].input.x[0]", "step 'c' is not among the needs of 'd', nor theirs")]


def test_a_cycle_is_named() -> None:
    problems = problems_of(step("x"), step("a", "c", "x"), step("b", "a"), step("c", "b"))

    assert problems == [("steps[1].needs", "the needs form a cycle: a -> b -> c -> a")]


def test_every_cycle_is_reported_even_one_after_another() -> None:
    problems = problems_of(step("a", "b"), step("b", "a"), step("c", "b", "d"), step("d", "c"))

    assert problems == [
        ("steps[0].needs", "the needs form a cycle: a -> b -> a"),
        ("steps[2].needs", "the needs form a cycle: c -> d -> c"),
    ]


def test_the_output_may_only_read_known_steps() -> None:
    assert problems_of(step("a"), output={"x": "$.steps.b.output"}) == [("output.x", "unknown step 'b'")]
    assert problems_of(step("a"), output="$.steps.a") == [
        ("output", "bad path '$.steps.a': a step's output is read as $.steps.NAME.output")
    ]


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        step("a", "ghost", queue="Q"),
        step("a", input="$.input.", extra=1),
        {"name": "c"},
        output="$.steps.zz.output",
    )

    assert sorted(field for field, _ in problems) == [
        "output",
        "steps[0].needs[0]",
        "steps[0].queue",
        "steps[1].extra",
        "steps[1].input",
        "steps[1].name",
        "steps[2].tool",
    ]


@dataclass(frozen=True)
class RandomDag:
    """A random acyclic workflow document, its steps in a random order, and each step's needs."""

    doc: dict[str, Any]
    needs: dict[str, list[str]]


@st.composite
def dags(draw: st.DrawFn) -> RandomDag:
    size = draw(st.integers(1, 10))
    needs: dict[str, list[str]] = {}
    for i in range(size):
        earlier = draw(st.sets(st.integers(0, i - 1))) if i else set()
        needs[f"s{i}"] = [f"s{j}" for j in sorted(earlier)]
    names = draw(st.permutations(sorted(needs)))
    steps = [
        step(
            name,
            *needs[name],
            input={"seed": "$.input.seed", **{n: f"$.steps.{n}.output" for n in needs[name]}},
        )
        for name in names
    ]
    return RandomDag({"name": "random", "version": "1", "kind": "dag", "steps": steps}, needs)


def output_of(name: str) -> str:
    return f"out-{name}"


@given(dag=dags(), data=st.data())
def test_a_full_run_starts_every_step_once_only_after_its_needs_and_replays_the_same(
    dag: RandomDag, data: st.DataObject
) -> None:
    wf = parse_dag(dag.doc)
    run_input = {"seed": 42}
    states: dict[str, StepState] = {}
    starts: list[str] = []
    while True:
        decision = decide(wf, run_input, states)
        assert decide(parse_dag(dag.doc), run_input, dict(reversed(states.items()))) == decision
        for start in decision.start:
            name = start.step.name
            assert name not in states
            assert all(states[need].state == "succeeded" for need in dag.needs[name])
            assert start.input == {"seed": 42, **{need: output_of(need) for need in dag.needs[name]}}
            states[name] = StepState("queued")
            starts.append(name)
        if decision.outcome is not None:
            break
        in_flight = sorted(name for name, state in states.items() if state.state != "succeeded")
        assert in_flight, "a run with nothing in flight and no outcome is stuck"
        name = data.draw(st.sampled_from(in_flight))
        if states[name].state == "queued" and data.draw(st.booleans()):
            states[name] = StepState("running")
        else:
            states[name] = done(output_of(name))

    assert sorted(starts) == sorted(dag.needs)
    assert decision.outcome.state == "succeeded"


@given(dag=dags(), data=st.data())
def test_once_a_step_fails_nothing_else_starts(dag: RandomDag, data: st.DataObject) -> None:
    names = sorted(dag.needs)
    states = {name: done(output_of(name)) for name in data.draw(st.lists(st.sampled_from(names)))}
    failed = data.draw(st.sampled_from(names))
    states[failed] = StepState("failed", error="boom")

    assert decide(parse_dag(dag.doc), {"seed": 1}, states) == Decision(
        (), RunOutcome("failed", None, f"step {failed!r} failed: boom")
    )
