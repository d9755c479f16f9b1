"""The DAG planner: checking workflow documents and deciding which step instances to start.

``chain_document``, ``layered_document`` and ``succeeded_states`` build the workflows the planner is
benchmarked with (a 1,000-step chain; 100 steps in layers of 10, each step needed by all 10 of the next).
"""

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.dag import DagWorkflow, parse_dag
from control_plane.planning.model import (
    Compensation,
    Decision,
    Plan,
    RunOutcome,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
)
from control_plane.planning.paths import compile_template
from control_plane.planning.problems import WorkflowInvalid
from control_plane.planning.records import Records
from tests.planning_replays import run_against_replays

RUN_INPUT = {"text": "one two three", "lang": "en"}


def step(name: str, *needs: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": "echo", **({"needs": list(needs)} if needs else {}), **fields}


def loop_step(
    name: str, *needs: str, steps: list[dict[str, Any]], until: str | None, most: int = 3, **fields: Any
) -> dict[str, Any]:
    loop = {"steps": steps, "until": until, "max_iterations": most}
    return {"name": name, **({"needs": list(needs)} if needs else {}), "loop": loop, **fields}


def document(*steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": "wf", "version": "1.0.0", "kind": "dag", "steps": list(steps), **fields}


def workflow(*steps: dict[str, Any], **fields: Any) -> DagWorkflow:
    return parse_dag(document(*steps, **fields))


def done(output: Any = None) -> StepState:
    return StepState("succeeded", output)


def started(decision: Decision) -> list[str]:
    return [start.key for start in decision.start]


def inputs(decision: Decision) -> dict[str, Any]:
    return {start.key: _call(start).input for start in decision.start}


def _call(start: Start) -> ToolCall:
    assert isinstance(start.action, ToolCall)
    return start.action


def succeeds(output: Any) -> Decision:
    return Decision((), RunOutcome("succeeded", output, None))


def fails(error: str) -> Decision:
    return Decision((), RunOutcome("failed", None, error))


def problems_of(*steps: Any, **fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowInvalid) as raised:
        workflow(*steps, **fields)
    return [(problem.field, problem.detail) for problem in raised.value.problems]


DIAMOND = workflow(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c"))


# --- the plan ---------------------------------------------------------------------------------------------


def test_a_dag_workflow_is_a_plan_of_kind_dag_without_signals() -> None:
    plan: Plan = DIAMOND

    assert (plan.kind, plan.signals) == ("dag", frozenset())
    assert list(plan.steps) == ["a", "b", "c", "d"]


def test_each_step_is_described_with_its_field_tool_retry_and_compensation() -> None:
    wf = workflow(
        step("a", tool="text-stats@1.0.0", retry={"max_attempts": 5}),
        step("b", "a", tool="charge", compensate={"tool": "refund@2", "input": {"id": "$.steps.b.output.id"}}),
    )

    assert wf.steps["a"] == StepInfo(
        "a", "steps[0]", ToolRef("steps[0].tool", "text-stats", "1.0.0"), {"max_attempts": 5}, None
    )
    assert wf.steps["b"] == StepInfo(
        "b",
        "steps[1]",
        ToolRef("steps[1].tool", "charge", None),
        None,
        Compensation(
            ToolRef("steps[1].compensate.tool", "refund", "2"),
            "default",
            compile_template({"id": "$.steps.b.output.id"}, "steps[1].compensate.input"),
        ),
    )


def test_a_start_calls_the_steps_tool_on_its_queue_with_the_rendered_input() -> None:
    wf = workflow(step("a", tool="text-stats@1.0.0", queue="gpu", input={"t": "$.input.text"}), step("b", "a"))

    assert wf.decide(RUN_INPUT, {}).start == (
        Start("a", "a", ToolCall("text-stats", "1.0.0", "gpu", {"t": "one two three"})),
    )
    assert wf.decide(RUN_INPUT, {"a": done(1)}).start == (
        Start("b", "b", ToolCall("echo", None, "default", RUN_INPUT)),
    )


# --- deciding -----------------------------------------------------------------------------------------------


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
        decision = DIAMOND.decide(RUN_INPUT, states)
        assert (started(decision), decision.outcome) == (expected, None), states

    final = DIAMOND.decide(RUN_INPUT, {"a": done(1), "b": done(2), "c": done(3), "d": done(4)})
    assert final == succeeds(4)


def test_a_step_starts_only_when_all_its_needs_succeeded() -> None:
    decision = DIAMOND.decide(RUN_INPUT, {"a": done(), "b": done(), "c": StepState("running")})

    assert "d" not in started(decision)


def test_a_step_with_a_recorded_state_is_not_started_again() -> None:
    decision = DIAMOND.decide(RUN_INPUT, {"a": done(), "b": StepState("queued")})

    assert started(decision) == ["c"]


def test_inputs_are_built_from_the_run_input_and_earlier_outputs() -> None:
    wf = workflow(
        step("stats", input={"text": "$.input.text"}),
        step("whole"),
        step("report", "stats", input={"words": "$.steps.stats.output.words", "lang": "$.input.lang"}),
    )

    first = wf.decide(RUN_INPUT, {})
    then = wf.decide(RUN_INPUT, {"stats": done({"words": 3}), "whole": StepState("running")})

    assert inputs(first) == {"stats": {"text": "one two three"}, "whole": RUN_INPUT}
    assert inputs(then) == {"report": {"words": 3, "lang": "en"}}


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
    decision = DIAMOND.decide(RUN_INPUT, {"a": done(), "b": StepState(state, error=error)})

    assert decision == fails(message)


def test_a_step_whose_input_cannot_be_rendered_fails_the_run() -> None:
    wf = workflow(step("a"), step("b", "a", input="$.steps.a.output.missing"), step("c", "a"))

    decision = wf.decide(RUN_INPUT, {"a": done({})})

    assert decision == fails("step 'b' input: $.steps.a.output.missing: no key 'missing'")


def test_an_output_that_cannot_be_rendered_fails_the_run() -> None:
    wf = workflow(step("a"), output="$.steps.a.output[0]")

    decision = wf.decide(RUN_INPUT, {"a": done("text")})

    assert decision == fails("output: $.steps.a.output[0]: no index 0 in a string")


def test_the_output_template_is_rendered_when_every_step_succeeded() -> None:
    wf = workflow(step("a"), step("b"), output={"first": "$.steps.a.output", "lang": "$.input.lang"})

    decision = wf.decide(RUN_INPUT, {"a": done(1), "b": done(2)})

    assert decision == succeeds({"first": 1, "lang": "en"})


def test_by_default_the_output_is_that_of_the_only_sink() -> None:
    decision = DIAMOND.decide(RUN_INPUT, {name: done(name.upper()) for name in "abcd"})

    assert decision == succeeds("D")


def test_by_default_the_output_maps_each_sink_to_its_output_in_document_order() -> None:
    wf = workflow(step("z", "a"), step("a"), step("m", "a"))

    decision = wf.decide(RUN_INPUT, {name: done(name.upper()) for name in "zam"})

    assert decision.outcome is not None
    assert list(decision.outcome.output.items()) == [("z", "Z"), ("m", "M")]


def test_steps_come_in_topological_order_with_ties_in_document_order() -> None:
    wf = workflow(step("report", "b", "a"), step("b", "c"), step("a"), step("c"), step("lone"))

    assert [s.name for s in wf.order] == ["a", "c", "b", "report", "lone"]


def test_an_input_of_null_is_a_literal_null() -> None:
    wf = workflow(step("a", input=None))

    assert inputs(wf.decide(RUN_INPUT, {})) == {"a": None}


def test_an_unknown_step_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown step state 'done'"):
        StepState("done")


# --- when -----------------------------------------------------------------------------------------------------

BRANCHES = workflow(
    step("classify"),
    step("short", "classify", when="$.steps.classify.output.words < 10"),
    step("long", "classify", when="$.steps.classify.output.words >= 10"),
    step("join", "short", "long", input={"short": "$.steps.short.output", "long": "$.steps.long.output"}),
)


def test_a_step_whose_condition_holds_starts_once_its_needs_are_settled() -> None:
    assert started(BRANCHES.decide(RUN_INPUT, {})) == ["classify"]
    assert started(BRANCHES.decide(RUN_INPUT, {"classify": done({"words": 3})})) == ["short"]


def test_a_skipped_step_settles_its_dependents_needs_and_reads_as_null() -> None:
    states = {"classify": done({"words": 30}), "long": done("summary")}

    assert inputs(BRANCHES.decide(RUN_INPUT, states)) == {"join": {"short": None, "long": "summary"}}


def test_a_run_whose_steps_are_all_skipped_or_done_succeeds_with_null_for_the_skipped() -> None:
    wf = workflow(step("a"), step("b", "a", when="$.input.lang == 'fr'"), output={"b": "$.steps.b.output"})

    assert wf.decide(RUN_INPUT, {"a": done()}) == succeeds({"b": None})


def test_a_condition_may_read_the_run_input_and_what_the_step_needs() -> None:
    wf = workflow(step("a"), step("b", "a", when="$.steps.a.output == 'go' and $.input.lang in ['en', 'fr']"))

    assert started(wf.decide(RUN_INPUT, {"a": done("go")})) == ["b"]
    assert wf.decide(RUN_INPUT, {"a": done("stop")}) == succeeds(None)


# --- continue_on_failure ----------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["failed", "dead", "cancelled"])
def test_a_step_that_continues_on_failure_settles_with_a_null_output(state: str) -> None:
    wf = workflow(
        step("a"),
        step("enrich", "a", continue_on_failure=True),
        step("b", "enrich", input={"extra": "$.steps.enrich.output"}),
    )

    decision = wf.decide(RUN_INPUT, {"a": done(), "enrich": StepState(state, error="boom")})

    assert inputs(decision) == {"b": {"extra": None}}
    assert wf.decide(RUN_INPUT, {"a": done(), "enrich": StepState(state), "b": done(7)}) == succeeds(7)


# --- fallback ---------------------------------------------------------------------------------------------

FALLBACK = workflow(
    step("a"),
    step("summarize", "a", tool="llm-large", input={"text": "$.steps.a.output"}, fallback={"tool": "llm-small@1"}),
    step("publish", "summarize", input="$.steps.summarize.output"),
)


@pytest.mark.parametrize("state", ["failed", "dead"])
def test_a_failed_step_starts_its_fallback_with_the_same_input(state: str) -> None:
    decision = FALLBACK.decide(RUN_INPUT, {"a": done("text"), "summarize": StepState(state, error="boom")})

    assert decision == Decision(
        (Start("summarize.fallback", "summarize.fallback", ToolCall("llm-small", "1", "default", {"text": "text"})),),
        None,
    )


def test_a_fallbacks_output_stands_in_for_the_steps() -> None:
    states = {"a": done(), "summarize": StepState("failed"), "summarize.fallback": done("short summary")}

    assert inputs(FALLBACK.decide(RUN_INPUT, states)) == {"publish": "short summary"}


def test_a_running_fallback_holds_the_steps_dependents() -> None:
    states = {"a": done(), "summarize": StepState("failed"), "summarize.fallback": StepState("running")}

    assert FALLBACK.decide(RUN_INPUT, states) == Decision((), None)


def test_a_step_whose_fallback_fails_too_fails_the_run() -> None:
    states = {
        "a": done(),
        "summarize": StepState("dead", error="3 attempts timed out"),
        "summarize.fallback": StepState("failed", error="exit status 2"),
    }

    assert FALLBACK.decide(RUN_INPUT, states) == fails(
        "step 'summarize' dead: 3 attempts timed out; its fallback failed: exit status 2"
    )


def test_a_cancelled_step_does_not_fall_back() -> None:
    states = {"a": done(), "summarize": StepState("cancelled")}

    assert FALLBACK.decide(RUN_INPUT, states) == fails("step 'summarize' cancelled")


def test_a_step_may_fall_back_and_then_continue_on_failure() -> None:
    wf = workflow(step("a", fallback={"tool": "b", "queue": "cpu", "input": "$.input.text"}, continue_on_failure=True))

    first = wf.decide(RUN_INPUT, {"a": StepState("failed")})
    final = wf.decide(RUN_INPUT, {"a": StepState("failed"), "a.fallback": StepState("failed")})

    assert first.start == (Start("a.fallback", "a.fallback", ToolCall("b", None, "cpu", "one two three")),)
    assert final == succeeds(None)


def test_a_fallback_is_described_as_an_element_of_its_own() -> None:
    assert FALLBACK.steps["summarize.fallback"] == StepInfo(
        "summarize.fallback", "steps[1].fallback", ToolRef("steps[1].fallback.tool", "llm-small", "1")
    )


# --- loops --------------------------------------------------------------------------------------------------

REFINE = workflow(
    step("brief"),
    loop_step(
        "refine",
        "brief",
        steps=[
            step("draft", input={"brief": "$.steps.brief.output", "last": "$.steps.refine.output"}),
            step("review", "draft", tool="critic", input="$.steps.draft.output"),
        ],
        until="$.steps.review.output.score >= 8",
    ),
    step("publish", "refine", input="$.steps.refine.output.draft"),
)


def test_a_loop_runs_its_first_iteration_once_its_needs_are_settled() -> None:
    decision = REFINE.decide(RUN_INPUT, {"brief": done("b")})

    assert decision.start == (
        Start("refine#1/draft", "draft", ToolCall("echo", None, "default", {"brief": "b", "last": None})),
    )


def test_a_loops_steps_run_in_order_within_an_iteration() -> None:
    decision = REFINE.decide(RUN_INPUT, {"brief": done("b"), "refine#1/draft": done("d1")})

    assert inputs(decision) == {"refine#1/review": "d1"}


def test_an_iteration_whose_until_does_not_hold_starts_the_next_reading_the_previous() -> None:
    states = {"brief": done("b"), "refine#1/draft": done("d1"), "refine#1/review": done({"score": 3})}

    assert inputs(REFINE.decide(RUN_INPUT, states)) == {
        "refine#2/draft": {"brief": "b", "last": {"draft": "d1", "review": {"score": 3}}}
    }


def test_a_loop_whose_until_holds_succeeds_with_its_last_iterations_outputs() -> None:
    states = {
        "brief": done("b"),
        "refine#1/draft": done("d1"),
        "refine#1/review": done({"score": 3}),
        "refine#2/draft": done("d2"),
        "refine#2/review": done({"score": 9}),
    }

    assert inputs(REFINE.decide(RUN_INPUT, states)) == {"publish": "d2"}


def test_a_loop_that_does_not_converge_fails() -> None:
    states = {"brief": done()}
    for i in (1, 2, 3):
        states |= {f"refine#{i}/draft": done(), f"refine#{i}/review": done({"score": i})}

    assert REFINE.decide(RUN_INPUT, states) == fails("step 'refine' did not converge after 3 iterations")


def test_a_failed_step_in_a_loop_fails_the_loop() -> None:
    states = {
        "brief": done(),
        "refine#1/draft": done(),
        "refine#1/review": done({}),
        "refine#2/draft": StepState("dead"),
    }

    assert REFINE.decide(RUN_INPUT, states) == fails("step 'refine' failed in iteration 2: step 'draft' dead")


def test_a_step_in_a_loop_may_continue_on_failure_or_be_skipped() -> None:
    wf = workflow(
        loop_step(
            "poll",
            steps=[
                step("check", continue_on_failure=True),
                step("alert", "check", when="$.steps.check.output == 'bad'"),
            ],
            until="$.steps.check.output == 'ok'",
        )
    )

    first = wf.decide(RUN_INPUT, {"poll#1/check": StepState("failed")})
    final = wf.decide(RUN_INPUT, {"poll#1/check": StepState("failed"), "poll#2/check": done("ok")})

    assert started(first) == ["poll#2/check"]
    assert final == succeeds({"check": "ok", "alert": None})


def test_a_loop_may_fall_back_continue_on_failure_and_be_skipped() -> None:
    wf = workflow(
        step("a"),
        loop_step("tune", "a", steps=[step("try")], until="false", most=1, fallback={"tool": "default-params"}),
        loop_step("extra", "a", steps=[step("more")], until="false", most=1, continue_on_failure=True),
        loop_step("never", "a", steps=[step("x")], until="true", when="$.steps.a.output == 'loop'"),
    )
    states = {"a": done(), "tune#1/try": done(), "extra#1/more": done()}

    assert wf.decide(RUN_INPUT, states).start == (
        Start("tune.fallback", "tune.fallback", ToolCall("default-params", None, "default", RUN_INPUT)),
    )
    assert wf.decide(RUN_INPUT, states | {"tune.fallback": done("p")}) == succeeds(
        {"tune": "p", "extra": None, "never": None}
    )


def test_a_step_in_a_loop_whose_input_cannot_be_rendered_fails_the_run() -> None:
    wf = workflow(loop_step("l", steps=[step("a"), step("b", "a", input="$.steps.a.output.x")], until="true"))

    assert wf.decide(RUN_INPUT, {"l#1/a": done(1)}) == fails(
        "step 'l' failed in iteration 1: step 'b' input: $.steps.a.output.x: no key 'x' in a number"
    )


def test_the_steps_of_a_loop_are_described_by_name() -> None:
    assert list(REFINE.steps) == ["brief", "refine", "draft", "review", "publish"]
    assert REFINE.steps["refine"] == StepInfo("refine", "steps[1]")
    assert REFINE.steps["review"].tool == ToolRef("steps[1].loop.steps[1].tool", "critic", None)


# --- checking -----------------------------------------------------------------------------------------------


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
        (step("b.fallback"), "steps[1].name", "not 'b.fallback'"),
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
        (
            step("b", retries=3),
            "steps[1].retries",
            "unknown key; a step has name, tool, agent, queue, needs, input, retry, compensate, when,"
            " continue_on_failure, fallback, loop",
        ),
        (step("b", input={"t": ["$.input["]}), "steps[1].input.t[0]", "bad path '$.input['"),
        (step("b", input="$.steps.nope.output"), "steps[1].input", "unknown step 'nope'"),
        (
            step("b", "a", input={"me": "$.steps.b.output"}),
            "steps[1].input.me",
            "a step cannot read its own output",
        ),
        (step("b", retry=3), "steps[1].retry", "must be a retry policy (a mapping)"),
        (step("b", compensate={"tool": "undo", "queue": "Q"}), "steps[1].compensate.queue", "must be a queue name"),
        (
            step("b", "a", compensate={"tool": "undo", "input": "$.steps.a.output"}),
            "steps[1].compensate.input",
            "a compensation reads only $.input and the output of 'b' it undoes",
        ),
        (step("b", when="$.input.x =="), "steps[1].when", "expected a value after '=='"),
        (step("b", when=True), "steps[1].when", "must be a condition written as a string, not True"),
        (step("b", when="$.steps.nope.output"), "steps[1].when", "unknown step 'nope'"),
        (step("b", continue_on_failure="yes"), "steps[1].continue_on_failure", "must be true or false, not 'yes'"),
        (step("b", fallback="other"), "steps[1].fallback", "must be a mapping with tool"),
        (step("b", fallback={}), "steps[1].fallback.tool", "required"),
        (step("b", fallback={"tool": "x", "needs": []}), "steps[1].fallback.needs", "unknown key; a fallback has"),
        (step("b", fallback={"tool": "x", "input": "$.steps.b.output"}), "steps[1].fallback.input", "its own output"),
    ],
)
def test_each_problem_in_a_step_is_reported_at_its_field(bad_step: Any, field: str, detail: str) -> None:
    [(found_field, found_detail)] = problems_of(step("a"), bad_step)

    assert found_field == field
    assert detail in found_detail


@pytest.mark.parametrize(
    "reads",
    [
        {"input": {"x": ["$.steps.c.output"]}},
        {"when": "$.steps.c.output == 1"},
        {"fallback": {"tool": "x", "input": {"x": ["$.steps.c.output"]}}},
    ],
)
def test_a_step_may_read_only_steps_it_needs_directly_or_through_other_needs(reads: dict[str, Any]) -> None:
    field = {"input": "input.x[0]", "when": "when", "fallback": "fallback.input.x[0]"}[next(iter(reads))]

    problems = problems_of(
        step("a"),
        step("b", "a"),
        step("c", "b", input={"grand": "$.steps.a.output", "parent": "$.steps.b.output"}, when="$.steps.a.output"),
        step("d", **reads),
    )

    assert problems == [(f"steps[3].{field}", "step 'c' is not among the needs of 'd', nor theirs")]


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


def inner(*steps: dict[str, Any], until: str | None = "true", **fields: Any) -> dict[str, Any]:
    """A loop step ``l`` (needing ``a``) with the given steps, as the second step after ``a``."""
    return loop_step("l", "a", steps=list(steps), until=until, **fields)


@pytest.mark.parametrize(
    ("bad_step", "field", "detail"),
    [
        (inner(step("x"), tool="echo"), "steps[1].tool", "unknown key; a loop step has name, needs, loop, when"),
        ({"name": "l", "loop": []}, "steps[1].loop", "must be a mapping with steps, until and max_iterations"),
        (inner(step("x"), until=None), "steps[1].loop.until", "required"),
        (inner(step("x"), until="$.steps.x.output =="), "steps[1].loop.until", "expected a value after"),
        (inner(step("x"), most=0), "steps[1].loop.max_iterations", "must be an integer >= 1, not 0"),
        ({"name": "l", "loop": {"steps": [step("x")], "until": "true"}}, "steps[1].loop.max_iterations", "required"),
        (inner(), "steps[1].loop.steps", "must have at least one step"),
        (inner(step("x", wait=1)), "steps[1].loop.steps[0].wait", "unknown key; a step has name"),
        (inner(loop_step("m", steps=[step("x")], until="true")), "steps[1].loop.steps[0].loop", "loops do not nest"),
        (inner(step("a")), "steps[1].loop.steps[0].name", "'a' is already steps[0]"),
        (inner(step("l")), "steps[1].loop.steps[0].name", "'l' is already steps[1]"),
        (inner(step("x", "y"), step("y", "x")), "steps[1].loop.steps[0].needs", "a cycle: x -> y -> x"),
        (inner(step("x", "a")), "steps[1].loop.steps[0].needs[0]", "'a' is outside loop 'l'; the loop step must"),
        (inner(step("x", "l")), "steps[1].loop.steps[0].needs[0]", "a step cannot need the loop it is in"),
        (inner(step("x", "nope")), "steps[1].loop.steps[0].needs[0]", "unknown step 'nope'"),
        (inner(step("x"), step("y", input="$.steps.x.output")), "steps[1].loop.steps[1].input", "not among the needs"),
        (inner(step("x", input="$.steps.x.output")), "steps[1].loop.steps[0].input", "cannot read its own output"),
        (inner(step("x"), until="$.steps.nope.output"), "steps[1].loop.until", "unknown step 'nope'"),
    ],
)
def test_each_problem_in_a_loop_is_reported_at_its_field(bad_step: Any, field: str, detail: str) -> None:
    [(found_field, found_detail)] = problems_of(step("a"), bad_step)

    assert found_field == field
    assert detail in found_detail


def test_a_loop_reads_what_the_loop_step_may_read_itself_and_its_own_steps() -> None:
    wf = workflow(
        step("a"),
        step("b", "a"),
        inner(
            step("x", input={"a": "$.steps.a.output", "l": "$.steps.l.output", "in": "$.input"}),
            step("y", "x", input="$.steps.x.output", when="$.steps.l.output.y != $.steps.x.output"),
            until="$.steps.y.output == $.steps.l.output.y and $.steps.a.output",
        ),
        step("c", "l", input="$.steps.l.output.y"),
    )

    assert [s.name for s in wf.order] == ["a", "b", "l", "c"]


def test_a_loop_reads_outside_only_what_the_loop_step_needs() -> None:
    problems = problems_of(
        step("a"),
        step("b"),
        inner(step("x", input="$.steps.b.output"), until="$.steps.b.output"),
    )

    assert problems == [
        ("steps[2].loop.steps[0].input", "step 'b' is not among the needs of 'l', nor theirs"),
        ("steps[2].loop.until", "step 'b' is not among the needs of 'l', nor theirs"),
    ]


def test_the_steps_of_a_loop_are_read_from_outside_only_through_its_output() -> None:
    problems = problems_of(
        step("a"),
        inner(step("x")),
        loop_step("m", "l", steps=[step("y", input="$.steps.x.output")], until="$.steps.x.output"),
        step("b", "l", "x", input="$.steps.x.output"),
        output="$.steps.x.output",
    )

    read_through = "step 'x' is a step of loop 'l'; read it as $.steps.l.output.x"
    assert problems == [
        ("steps[3].needs[1]", "'x' is a step of loop 'l', seen from outside only through its output"),
        ("steps[2].loop.steps[0].input", read_through),
        ("steps[2].loop.until", read_through),
        ("steps[3].input", read_through),
        ("output", read_through),
    ]


# --- properties -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomDag:
    """A random acyclic workflow document (its steps in a random order), each step's needs, and every key
    a run of it could record."""

    doc: dict[str, Any]
    needs: dict[str, list[str]]
    keys: list[str]


@st.composite
def dags(draw: st.DrawFn, *, extensions: bool = True) -> RandomDag:
    size = draw(st.integers(1, 8))
    needs: dict[str, list[str]] = {}
    for i in range(size):
        earlier = draw(st.sets(st.integers(0, i - 1))) if i else set()
        needs[f"s{i}"] = [f"s{j}" for j in sorted(earlier)]
    keys: list[str] = []
    steps = []
    for name in draw(st.permutations(sorted(needs))):
        body: dict[str, Any] = (
            _random_loop(draw, name, keys) if extensions and draw(st.booleans()) else {"tool": "echo"}
        )
        fields = _random_extensions(draw, name, needs[name], keys) if extensions else {}
        if "loop" not in body:
            keys.append(name)
            body["input"] = {"seed": "$.input.seed", **{n: f"$.steps.{n}.output" for n in needs[name]}}
        steps.append({"name": name, **({"needs": needs[name]} if needs[name] else {}), **body, **fields})
    return RandomDag({"name": "random", "version": "1", "kind": "dag", "steps": steps}, needs, keys)


def _random_extensions(draw: st.DrawFn, name: str, needs: list[str], keys: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["when"] = " and ".join([f"$.input.skip.{name} != true", *(f"$.steps.{n}.output != 'x'" for n in needs)])
    if draw(st.booleans()):
        fields["continue_on_failure"] = True
    if draw(st.booleans()):
        fields["fallback"] = {"tool": "spare"}
        keys.append(f"{name}.fallback")
    return fields


def _random_loop(draw: st.DrawFn, name: str, keys: list[str]) -> dict[str, Any]:
    size = draw(st.integers(1, 3))
    subs = [f"{name}-{j}" for j in range(size)]
    most = draw(st.integers(1, 3))
    steps = []
    for j, sub in enumerate(subs):
        sub_needs = [subs[k] for k in sorted(draw(st.sets(st.integers(0, j - 1))))] if j else []
        fields = _random_extensions(draw, sub, sub_needs, []) if draw(st.booleans()) else {}
        input = {"last": f"$.steps.{name}.output", **{n: f"$.steps.{n}.output" for n in sub_needs}}
        steps.append(step(sub, *sub_needs, input=input, **fields))
        for i in range(1, most + 1):
            keys.append(f"{name}#{i}/{sub}")
            if "fallback" in fields:
                keys.append(f"{name}#{i}/{sub}.fallback")
    until = f"$.steps.{subs[-1]}.output == 'x'"
    return {"loop": {"steps": steps, "until": until, "max_iterations": most}}


OUTPUTS = st.sampled_from(["x", "y", None, {"k": 1}])
ENDS = st.one_of(
    OUTPUTS.map(done),
    st.sampled_from(["failed", "dead", "cancelled"]).map(lambda state: StepState(state, error="boom")),
)
RECORDS = st.one_of(st.sampled_from(["queued", "running"]).map(StepState), ENDS)


@given(dag=dags(), data=st.data())
def test_deciding_twice_gives_the_same_decision_and_never_starts_a_recorded_key(
    dag: RandomDag, data: st.DataObject
) -> None:
    wf = parse_dag(dag.doc)
    run_input = {"seed": 1, "skip": data.draw(st.dictionaries(st.sampled_from(sorted(dag.needs)), st.booleans()))}
    recorded = data.draw(st.lists(st.sampled_from(dag.keys), unique=True)) if dag.keys else []
    states = {key: data.draw(RECORDS) for key in recorded}

    decision = wf.decide(run_input, states)

    assert wf.decide(run_input, states) == decision
    assert parse_dag(dag.doc).decide(run_input, dict(reversed(states.items()))) == decision
    keys = started(decision)
    assert len(set(keys)) == len(keys)
    assert not set(keys) & set(states)
    assert all(start.step in wf.steps for start in decision.start)


@given(dag=dags(), data=st.data())
@settings(deadline=None)
def test_a_run_with_random_outcomes_starts_each_key_once_and_ends(dag: RandomDag, data: st.DataObject) -> None:
    wf = parse_dag(dag.doc)
    run_input = {"seed": 1, "skip": data.draw(st.dictionaries(st.sampled_from(sorted(dag.needs)), st.booleans()))}
    states: dict[str, StepState] = {}
    while (decision := wf.decide(run_input, states)).outcome is None:
        for start in decision.start:
            assert start.key in dag.keys and start.key not in states
            states[start.key] = StepState("queued")
        in_flight = [key for key, state in states.items() if state.state in ("queued", "running")]
        assert in_flight, "a run with nothing in flight and no outcome is stuck"
        key = data.draw(st.sampled_from(in_flight))
        running = states[key].state == "queued" and data.draw(st.booleans())
        states[key] = StepState("running") if running else data.draw(ENDS)
    assert decision.start == ()


def output_of(name: str) -> str:
    return f"out-{name}"


@given(dag=dags(extensions=False), data=st.data())
def test_a_full_run_starts_every_step_once_only_after_its_needs_and_replays_the_same(
    dag: RandomDag, data: st.DataObject
) -> None:
    wf = parse_dag(dag.doc)
    run_input = {"seed": 42}
    states: dict[str, StepState] = {}
    starts: list[str] = []
    while True:
        decision = wf.decide(run_input, states)
        assert parse_dag(dag.doc).decide(run_input, dict(reversed(states.items()))) == decision
        for start in decision.start:
            name = start.key
            assert name not in states
            assert all(states[need].state == "succeeded" for need in dag.needs[name])
            assert _call(start).input == {"seed": 42, **{need: output_of(need) for need in dag.needs[name]}}
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


@given(dag=dags(extensions=False), data=st.data())
def test_once_a_step_fails_nothing_else_starts(dag: RandomDag, data: st.DataObject) -> None:
    names = sorted(dag.needs)
    states = {name: done(output_of(name)) for name in data.draw(st.lists(st.sampled_from(names)))}
    failed = data.draw(st.sampled_from(names))
    states[failed] = StepState("failed", error="boom")

    assert parse_dag(dag.doc).decide({"seed": 1}, states) == fails(f"step {failed!r} failed: boom")


@given(dag=dags(), data=st.data())
@settings(deadline=None)
def test_deciding_from_the_last_decision_decides_as_a_replay_of_every_step(dag: RandomDag, data: st.DataObject) -> None:
    wf = parse_dag(dag.doc)
    run_input = {"seed": 1, "skip": data.draw(st.dictionaries(st.sampled_from(sorted(dag.needs)), st.booleans()))}

    run_against_replays(wf, run_input, data, lambda start: st.one_of(st.just(StepState("running")), ENDS), dag.keys)


def test_a_layered_run_decided_result_by_result_starts_each_layer_once_the_one_before_settled() -> None:
    wf = parse_dag(layered_document(layers=3, width=4))
    records = Records()
    for layer in range(3):
        decision = wf.decide(RUN_INPUT, records)
        assert started(decision) == [f"l{layer}-{j}" for j in range(4)]
        for key in started(decision):
            records.set(key, StepState("queued"))
        for j in range(4):
            assert wf.decide(RUN_INPUT, records) == Decision((), None)
            records.set(f"l{layer}-{j}", done({"n": j}))
    assert wf.decide(RUN_INPUT, records).outcome is not None
    # A record of a settled step set again (no engine does) sends the decision back to a replay of every step.
    records.set("l1-2", StepState("failed", error="boom"))

    assert wf.decide(RUN_INPUT, records) == fails("step 'l1-2' failed: boom")


# --- benchmark workflows ------------------------------------------------------------------------------------


def chain_document(length: int = 1000) -> dict[str, Any]:
    """``length`` steps, each needing and reading the one before."""
    steps = [step("s0")] + [step(f"s{i}", f"s{i - 1}", input=f"$.steps.s{i - 1}.output") for i in range(1, length)]
    return document(*steps)


def layered_document(layers: int = 10, width: int = 10) -> dict[str, Any]:
    """``layers`` layers of ``width`` steps; each step needs every step of the layer before and reads one."""
    steps: list[dict[str, Any]] = []
    for layer in range(layers):
        before = [f"l{layer - 1}-{j}" for j in range(width)] if layer else []
        input: Any = {"from": f"$.steps.{before[0]}.output"} if before else "$.input"
        steps.extend(step(f"l{layer}-{j}", *before, input=input) for j in range(width))
    return document(*steps)


def succeeded_states(doc: dict[str, Any], count: int) -> dict[str, StepState]:
    """The first ``count`` steps of a benchmark document (written in topological order) succeeded."""
    return {raw["name"]: done({"n": i}) for i, raw in enumerate(doc["steps"][:count])}


@pytest.mark.parametrize(
    ("doc", "halfway_starts", "size"),
    [(chain_document(), ["s500"], 1000), (layered_document(), [f"l5-{j}" for j in range(10)], 100)],
)
def test_the_benchmark_workflows_start_the_next_steps_and_succeed(
    doc: dict[str, Any], halfway_starts: list[str], size: int
) -> None:
    wf = parse_dag(doc)

    assert len(wf.steps) == size
    assert started(wf.decide(None, succeeded_states(doc, size // 2))) == halfway_starts
    assert wf.decide(None, succeeded_states(doc, size)).outcome is not None
