"""The behavior-tree planner: checking workflow documents and ticking the tree over recorded step instances."""

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.planning import (
    Action,
    AwaitSignal,
    Compensation,
    Decision,
    RunOutcome,
    Sleep,
    Start,
    StepInfo,
    StepState,
    ToolCall,
    ToolRef,
    WorkflowInvalid,
    compile_template,
)
from control_plane.planning.bt import MAX_DEPTH, BtWorkflow, benchmark_document, parse_bt
from control_plane.planning.fields import DOCUMENT_KEYS
from control_plane.planning.model import FINISHED
from control_plane.planning.records import Records
from tests.planning_replays import run_against_replays

RUN_INPUT = {"topic": "tides", "flag": True}


def tree(root: Any, **fields: Any) -> BtWorkflow:
    return parse_bt({"name": "wf", "version": "1.0.0", "kind": "bt", "root": root, **fields})


def leaf(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "tool": "echo", **fields}


def done(output: Any = None) -> StepState:
    return StepState("succeeded", output)


def fail(error: str | None = "boom", state: str = "failed") -> StepState:
    return StepState(state, error=error)


RUNNING = StepState("running")


def started(decision: Decision) -> list[str]:
    return [start.key for start in decision.start]


def inputs(decision: Decision) -> dict[str, Any]:
    return {start.key: start.action.input for start in decision.start if isinstance(start.action, ToolCall)}


def echo(key: str, input: Any = RUN_INPUT) -> Start:
    return Start(key, key.partition("#")[0], ToolCall("echo", None, "default", input))


def waiting() -> Decision:
    return Decision((), None)


def succeeds(output: Any) -> Decision:
    return Decision((), RunOutcome("succeeded", output, None))


def fails(error: str) -> Decision:
    return Decision((), RunOutcome("failed", None, error))


def problems_of(root: Any = None, **fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowInvalid) as raised:
        parse_bt({"kind": "bt", **({} if root is None else {"root": root}), **fields})
    return [(problem.field, problem.detail) for problem in raised.value.problems]


# --- sequence ---------------------------------------------------------------------------------------------

PIPELINE = tree({"sequence": [leaf("a"), leaf("b"), leaf("c")]})


def test_a_sequence_starts_its_children_one_after_another() -> None:
    assert PIPELINE.decide(RUN_INPUT, {}) == Decision((echo("a"),), None)
    assert PIPELINE.decide(RUN_INPUT, {"a": StepState("queued")}) == waiting()
    assert PIPELINE.decide(RUN_INPUT, {"a": RUNNING}) == waiting()
    assert started(PIPELINE.decide(RUN_INPUT, {"a": done()})) == ["b"]
    assert started(PIPELINE.decide(RUN_INPUT, {"a": done(), "b": done()})) == ["c"]


def test_a_sequence_whose_children_all_succeed_succeeds_with_every_leafs_output_by_default() -> None:
    decision = PIPELINE.decide(RUN_INPUT, {"a": done(1), "b": done(2), "c": done(3)})

    assert decision == succeeds({"a": 1, "b": 2, "c": 3})


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (fail("exit status 1"), "root.sequence[1]: 'b' failed: exit status 1"),
        (fail("3 attempts timed out", "dead"), "root.sequence[1]: 'b' dead: 3 attempts timed out"),
        (fail(None, "cancelled"), "root.sequence[1]: 'b' cancelled"),
    ],
)
def test_a_sequence_fails_at_its_first_failed_child_naming_it(record: StepState, reason: str) -> None:
    assert PIPELINE.decide(RUN_INPUT, {"a": done(), "b": record}) == fails(reason)


# --- selector ---------------------------------------------------------------------------------------------

FALLBACK = tree({"sequence": [{"selector": [leaf("primary"), leaf("backup")]}, leaf("write")]})


def test_a_selector_stops_at_the_first_child_that_succeeds() -> None:
    assert started(FALLBACK.decide(RUN_INPUT, {})) == ["primary"]
    assert started(FALLBACK.decide(RUN_INPUT, {"primary": done()})) == ["write"]


def test_a_selector_falls_back_to_the_next_child_when_one_fails() -> None:
    assert started(FALLBACK.decide(RUN_INPUT, {"primary": fail()})) == ["backup"]
    assert started(FALLBACK.decide(RUN_INPUT, {"primary": fail(), "backup": done()})) == ["write"]


def test_a_selector_whose_children_all_fail_fails_with_the_last_reason() -> None:
    decision = FALLBACK.decide(RUN_INPUT, {"primary": fail(), "backup": fail("no quota", "dead")})

    assert decision == fails(
        "root.sequence[0]: every child failed (the last: root.sequence[0].selector[1]: 'backup' dead: no quota)"
    )


# --- parallel ---------------------------------------------------------------------------------------------

FAN_OUT = tree(
    {
        "sequence": [
            {
                "parallel": {
                    "success_threshold": 2,
                    "children": [leaf("a"), {"sequence": [leaf("b"), leaf("c")]}, leaf("d")],
                }
            },
            leaf("after"),
        ]
    }
)


def test_a_parallel_starts_every_child_at_once() -> None:
    assert started(FAN_OUT.decide(RUN_INPUT, {})) == ["a", "b", "d"]
    assert started(FAN_OUT.decide(RUN_INPUT, {"a": RUNNING, "b": done(), "d": RUNNING})) == ["c"]


def test_a_parallel_succeeds_once_its_threshold_succeeded_and_starts_nothing_more_under_it() -> None:
    # c would be next under the parallel, but two children have succeeded: only what follows starts.
    decision = FAN_OUT.decide(RUN_INPUT, {"a": done(), "b": done(), "d": done()})

    assert started(decision) == ["after"]


def test_a_parallel_fails_once_its_threshold_can_no_longer_be_reached() -> None:
    decision = FAN_OUT.decide(RUN_INPUT, {"a": fail(), "b": done(), "c": RUNNING, "d": fail()})

    assert decision == fails("root.sequence[0]: fewer than 2 of its 3 children can succeed")


def test_a_parallel_needs_every_child_by_default() -> None:
    wf = tree({"parallel": {"children": [leaf("a"), leaf("b")]}})

    assert wf.decide(RUN_INPUT, {"a": done(), "b": RUNNING}) == waiting()
    assert wf.decide(RUN_INPUT, {"a": done(), "b": fail()}) == fails("root: fewer than 2 of its 2 children can succeed")


def test_whatever_reads_a_leaf_left_running_under_a_settled_parallel_waits_for_it() -> None:
    wf = tree(
        {
            "sequence": [
                {"parallel": {"success_threshold": 1, "children": [leaf("fast"), leaf("slow")]}},
                {"condition": "$.steps.slow.output.ok == true"},
                leaf("use", input="$.steps.slow.output"),
            ]
        }
    )

    assert wf.decide(RUN_INPUT, {"fast": done(), "slow": RUNNING}) == waiting()
    assert started(wf.decide(RUN_INPUT, {"fast": done(), "slow": done({"ok": True})})) == ["use"]


# --- retry ------------------------------------------------------------------------------------------------

RETRIED = tree({"retry": {"times": 3, "child": leaf("x")}})


def test_a_retry_runs_its_child_again_after_each_failure_with_the_attempt_in_the_key() -> None:
    assert started(RETRIED.decide(RUN_INPUT, {})) == ["x"]
    assert RETRIED.decide(RUN_INPUT, {"x": fail()}) == Decision((echo("x#2"),), None)
    assert started(RETRIED.decide(RUN_INPUT, {"x": fail(), "x#2": fail()})) == ["x#3"]


def test_a_retry_whose_child_succeeds_succeeds() -> None:
    assert RETRIED.decide(RUN_INPUT, {"x": fail(), "x#2": done(7)}) == succeeds({"x": 7})


def test_a_retry_gives_up_after_its_attempts_with_the_last_reason() -> None:
    decision = RETRIED.decide(RUN_INPUT, {"x": fail(), "x#2": fail(), "x#3": fail("out of memory")})

    assert decision == fails("root: gave up after 3 attempts (the last: root.retry.child: 'x' failed: out of memory)")


def test_a_retry_of_what_fails_without_a_step_instance_gives_up_at_once() -> None:
    wf = tree({"retry": {"times": 1_000_000_000, "child": {"condition": "$.input.flag == false"}}})

    assert wf.decide(RUN_INPUT, {}) == fails(
        "root: gave up after 1000000000 attempts (the last: root.retry.child: condition '$.input.flag == false' "
        "does not hold)"
    )


def test_nested_retries_and_rounds_number_keys_outermost_first() -> None:
    wf = tree(
        {
            "repeat_until": {
                "condition": "$.steps.x.output == 'ok'",
                "max": 3,
                "child": {"retry": {"times": 2, "child": leaf("x")}},
            }
        }
    )

    assert started(wf.decide(RUN_INPUT, {})) == ["x"]
    assert started(wf.decide(RUN_INPUT, {"x": fail()})) == ["x#1.2"]
    assert started(wf.decide(RUN_INPUT, {"x": fail(), "x#1.2": done("no")})) == ["x#2.1"]
    assert wf.decide(RUN_INPUT, {"x": fail(), "x#1.2": done("no"), "x#2.1": done("ok")}) == succeeds({"x": "ok"})


# --- timeout ----------------------------------------------------------------------------------------------

TIMED = tree({"selector": [{"timeout": {"seconds": 30, "child": leaf("slow")}}, leaf("backup")]})
TIMER = "root.selector[0].timeout"
EXPIRED = "root.selector[0].expired"


def test_a_timeout_starts_a_timer_along_with_its_child() -> None:
    assert TIMED.decide(RUN_INPUT, {}) == Decision((Start(TIMER, TIMER, Sleep(30)), echo("slow")), None)
    assert TIMED.decide(RUN_INPUT, {TIMER: StepState("queued"), "slow": RUNNING}) == waiting()


def test_a_child_that_finishes_first_settles_the_timeout_whenever_the_timer_runs_out() -> None:
    won = succeeds({"slow": 1, "backup": None})

    assert TIMED.decide(RUN_INPUT, {TIMER: StepState("queued"), "slow": done(1)}) == won
    assert TIMED.decide(RUN_INPUT, {TIMER: done(), "slow": done(1)}) == won


def test_a_timer_that_runs_out_first_fails_the_node_and_is_recorded_as_having_won() -> None:
    decision = TIMED.decide(RUN_INPUT, {TIMER: done(), "slow": RUNNING})

    assert decision == Decision((Start(EXPIRED, TIMER, Sleep(0)), echo("backup")), None)


def test_a_child_finishing_after_its_timer_won_changes_nothing() -> None:
    states = {TIMER: done(), "slow": done(1), EXPIRED: StepState("queued")}

    assert started(TIMED.decide(RUN_INPUT, states)) == ["backup"]


def test_a_run_failed_by_a_timeout_waits_for_the_record_of_it_and_then_stays_failed() -> None:
    wf = tree({"timeout": {"seconds": 1.5, "child": leaf("slow")}})
    lost = fails("root: not finished within 1.5 seconds")

    assert wf.decide(RUN_INPUT, {"root.timeout": done(), "slow": RUNNING}) == Decision(
        (Start("root.expired", "root.timeout", Sleep(0)),), None
    )
    assert wf.decide(RUN_INPUT, {"root.timeout": done(), "slow": RUNNING, "root.expired": done()}) == lost
    assert wf.decide(RUN_INPUT, {"root.timeout": done(), "slow": done(), "root.expired": done()}) == lost


def test_the_timer_of_a_retried_timeout_is_keyed_by_attempt() -> None:
    wf = tree({"retry": {"times": 2, "child": {"timeout": {"seconds": 5, "child": leaf("x")}}}})
    timer = "root.retry.child.timeout"

    decision = wf.decide(RUN_INPUT, {timer: StepState("queued"), "x": fail()})

    assert decision == Decision((Start(f"{timer}#2", timer, Sleep(5)), echo("x#2")), None)


# --- invert, condition, repeat_until --------------------------------------------------------------------------


def test_invert_swaps_success_and_failure() -> None:
    wf = tree({"invert": leaf("probe")})

    assert wf.decide(RUN_INPUT, {"probe": RUNNING}) == waiting()
    assert wf.decide(RUN_INPUT, {"probe": fail()}) == succeeds({"probe": None})
    assert wf.decide(RUN_INPUT, {"probe": done()}) == fails("root: its child succeeded")


SEARCH = tree({"sequence": [leaf("search"), {"condition": "$.steps.search.output.hits > 0"}, leaf("write")]})


def test_a_condition_leaf_succeeds_when_it_holds_without_a_step_instance() -> None:
    assert started(SEARCH.decide(RUN_INPUT, {"search": done({"hits": 3})})) == ["write"]


def test_a_condition_leaf_that_does_not_hold_fails_naming_it() -> None:
    assert SEARCH.decide(RUN_INPUT, {"search": done({"hits": 0})}) == fails(
        "root.sequence[1]: condition '$.steps.search.output.hits > 0' does not hold"
    )


REVIEWED = tree(
    {
        "repeat_until": {
            "condition": "$.steps.review.output.score >= 8",
            "max": 2,
            "child": leaf("review", input={"topic": "$.input.topic", "last": "$.steps.review.output"}),
        }
    }
)


def test_a_repeat_until_runs_its_child_again_reading_the_previous_round_until_the_condition_holds() -> None:
    assert inputs(REVIEWED.decide(RUN_INPUT, {})) == {"review": {"topic": "tides", "last": None}}
    assert inputs(REVIEWED.decide(RUN_INPUT, {"review": done({"score": 3})})) == {
        "review#2": {"topic": "tides", "last": {"score": 3}}
    }
    assert REVIEWED.decide(RUN_INPUT, {"review": done({"score": 3}), "review#2": done({"score": 9})}) == succeeds(
        {"review": {"score": 9}}
    )


def test_a_repeat_until_fails_after_max_rounds_that_did_not_make_it_hold() -> None:
    decision = REVIEWED.decide(RUN_INPUT, {"review": done({"score": 3}), "review#2": done({"score": 4})})

    assert decision == fails("root: condition '$.steps.review.output.score >= 8' did not hold after 2 rounds")


def test_a_repeat_until_fails_with_the_reason_of_a_round_that_failed() -> None:
    decision = REVIEWED.decide(RUN_INPUT, {"review": done({"score": 3}), "review#2": fail()})

    assert decision == fails("root.repeat_until.child: 'review' failed: boom")


# --- wait_signal ------------------------------------------------------------------------------------------

APPROVAL = tree(
    {
        "sequence": [
            {"wait_signal": {"name": "approval", "signals": ["approve", "reject"], "timeout_seconds": 600}},
            leaf("publish", input="$.steps.approval.output.data"),
        ]
    }
)


def test_a_wait_signal_leaf_waits_for_one_of_its_signals() -> None:
    assert APPROVAL.decide(RUN_INPUT, {}) == Decision(
        (Start("approval", "approval", AwaitSignal(("approve", "reject"), 600)),), None
    )
    states = {"approval": done({"signal": "approve", "data": {"by": "ana"}})}
    assert inputs(APPROVAL.decide(RUN_INPUT, states)) == {"publish": {"by": "ana"}}


def test_a_wait_signal_leaf_that_times_out_fails() -> None:
    decision = APPROVAL.decide(RUN_INPUT, {"approval": fail("timed out waiting for a signal (approve, reject)")})

    assert decision == fails("root.sequence[0]: 'approval' failed: timed out waiting for a signal (approve, reject)")


# --- inputs and output ------------------------------------------------------------------------------------


def test_inputs_read_the_run_input_and_the_latest_output_of_each_leaf_null_when_none() -> None:
    wf = tree(
        {
            "sequence": [
                {"selector": [leaf("primary"), leaf("backup")]},
                leaf("write", input={"a": "$.steps.primary.output", "b": "$.steps.backup.output.text", "t": "$$5"}),
            ]
        }
    )

    decision = wf.decide(RUN_INPUT, {"primary": fail(), "backup": done({"text": "hi"})})

    assert inputs(decision) == {"write": {"a": None, "b": "hi", "t": "$5"}}


def test_the_output_template_is_rendered_when_the_root_succeeds() -> None:
    wf = tree(leaf("write"), output={"summary": "$.steps.write.output.text", "topic": "$.input.topic"})

    assert wf.decide(RUN_INPUT, {"write": done({"text": "done"})}) == succeeds({"summary": "done", "topic": "tides"})


# --- what the plan tells the control plane ------------------------------------------------------------------


def test_the_plan_describes_every_leaf_and_timer_and_lists_every_signal() -> None:
    wf = tree(
        {
            "sequence": [
                leaf(
                    "pay",
                    tool="charge@2.1.0",
                    queue="payments",
                    retry={"max_attempts": 5},
                    compensate={"tool": "refund"},
                ),
                {"timeout": {"seconds": 60, "child": {"wait_signal": {"name": "ok", "signals": ["go"]}}}},
                {"wait_signal": {"name": "second", "signals": ["go", "stop"]}},
            ]
        }
    )

    assert wf.kind == "bt"
    assert wf.signals == {"go", "stop"}
    assert wf.steps == {
        "pay": StepInfo(
            "pay",
            "root.sequence[0]",
            ToolRef("root.sequence[0].tool", "charge", "2.1.0"),
            {"max_attempts": 5},
            Compensation(
                ToolRef("root.sequence[0].compensate.tool", "refund", None),
                "default",
                compile_template("$.input", "root.sequence[0].compensate.input"),
            ),
        ),
        "ok": StepInfo("ok", "root.sequence[1].timeout.child"),
        "root.sequence[1].timeout": StepInfo("root.sequence[1].timeout", "root.sequence[1].timeout"),
        "second": StepInfo("second", "root.sequence[2]"),
    }


# --- checking ---------------------------------------------------------------------------------------------

NODE_KINDS = "sequence, selector, parallel, retry, timeout, invert, repeat_until, condition, wait_signal"


@pytest.mark.parametrize(
    ("root", "field", "detail"),
    [
        ({"loop": []}, "root", f"a node is a tool leaf (name and tool) or has exactly one of {NODE_KINDS}"),
        ({"sequence": [leaf("a")], "invert": leaf("b")}, "root", "a node is a tool leaf"),
        ({"sequence": [leaf("a")], "name": "s"}, "root.name", "unknown key; a sequence node has sequence"),
        (leaf("a", needs=["b"]), "root.needs", "unknown key; a tool leaf has name, tool, agent, queue, input, retry"),
        ({"sequence": ["a"]}, "root.sequence[0]", "a node must be a mapping"),
        ({"sequence": []}, "root.sequence", "must be a list of nodes, with at least one"),
        ({"selector": {"a": 1}}, "root.selector", "must be a list of nodes, with at least one"),
        ({"parallel": {}}, "root.parallel.children", "required"),
        ({"parallel": {"children": []}}, "root.parallel.children", "must be a list of nodes, with at least one"),
        ({"parallel": [leaf("a")]}, "root.parallel", "must be a mapping with children, and optionally"),
        (
            {"parallel": {"children": [leaf("a")], "threshold": 1}},
            "root.parallel.threshold",
            "unknown key; a parallel node has children, success_threshold",
        ),
        (
            {"parallel": {"children": [leaf("a")], "success_threshold": 0}},
            "root.parallel.success_threshold",
            "must be an integer >= 1, not 0",
        ),
        (
            {"parallel": {"children": [leaf("a"), leaf("b")], "success_threshold": 3}},
            "root.parallel.success_threshold",
            "must be at most the number of children, 2, not 3",
        ),
        ({"sequence": [leaf("a"), leaf("a")]}, "root.sequence[1].name", "'a' is already the name of the leaf at root"),
        (
            {"sequence": [leaf("a"), {"wait_signal": {"name": "a", "signals": ["go"]}}]},
            "root.sequence[1].wait_signal.name",
            "'a' is already the name of the leaf at root.sequence[0]",
        ),
        ({"sequence": [{"selector": [leaf("a", tool="Web Search")]}]}, "root.sequence[0].selector[0].tool", "must be"),
        (leaf("a", tool="search@"), "root.tool", "must be a tool as name@version or name"),
        (leaf("a", queue="GPU queue"), "root.queue", "must be a queue name matching"),
        ({"name": "a"}, "root.tool", "required"),
        (leaf("Search"), "root.name", "must be a name matching"),
        ({"condition": "$.input.x >"}, "root.condition", "column 12: expected a value after '>', found the end"),
        ({"condition": 3}, "root.condition", "must be a condition written as a string, not 3"),
        (
            {"sequence": [leaf("a"), {"condition": "$.steps.b.output > 1"}]},
            "root.sequence[1].condition",
            "no tool or wait_signal leaf is named 'b'",
        ),
        (leaf("a", input={"q": "$.steps.b.output"}), "root.input.q", "no tool or wait_signal leaf is named 'b'"),
        (leaf("a", input={"q": "$.steps.b"}), "root.input.q", "bad path '$.steps.b'"),
        (
            {"parallel": {"children": [leaf("a"), {"sequence": [leaf("b", input="$.steps.a.output")]}]}},
            "root.parallel.children[1].sequence[0].input",
            "'a' runs beside it, under another child of the parallel at root; only what comes after that parallel",
        ),
        (
            leaf("a", compensate={"tool": "undo", "input": "$.steps.b.output"}),
            "root.compensate.input",
            "a compensation reads only $.input and the output of 'a' it undoes",
        ),
        ({"retry": {"times": 0, "child": leaf("a")}}, "root.retry.times", "must be an integer >= 1, not 0"),
        ({"retry": {"child": leaf("a")}}, "root.retry.times", "required"),
        ({"retry": {"times": 2}}, "root.retry.child", "required"),
        ({"retry": 3}, "root.retry", "must be a mapping with times and child"),
        ({"timeout": {"seconds": 0, "child": leaf("a")}}, "root.timeout.seconds", "must be a number of seconds > 0"),
        ({"timeout": {"seconds": -1, "child": leaf("a")}}, "root.timeout.seconds", "must be a number of seconds > 0"),
        ({"timeout": {"seconds": "30", "child": leaf("a")}}, "root.timeout.seconds", "must be a number of seconds"),
        ({"timeout": {"child": leaf("a")}}, "root.timeout.seconds", "required"),
        (
            {"repeat_until": {"condition": "$.input.flag", "max": 0, "child": leaf("a")}},
            "root.repeat_until.max",
            "must be an integer >= 1, not 0",
        ),
        ({"repeat_until": {"max": 2, "child": leaf("a")}}, "root.repeat_until.condition", "required"),
        ({"invert": None}, "root.invert", "required"),
        ({"wait_signal": {"name": "w"}}, "root.wait_signal.signals", "required"),
        ({"wait_signal": {"name": "w", "signals": []}}, "root.wait_signal.signals", "must be a list of signal names"),
        ({"wait_signal": {"name": "w", "signals": ["Go!"]}}, "root.wait_signal.signals[0]", "must be a signal name"),
        (
            {"wait_signal": {"name": "w", "signals": ["go", "go"]}},
            "root.wait_signal.signals[1]",
            "'go' is listed twice",
        ),
        ({"wait_signal": {"signals": ["go"]}}, "root.wait_signal.name", "required"),
        (
            {"wait_signal": {"name": "w", "signals": ["go"], "timeout_seconds": 0}},
            "root.wait_signal.timeout_seconds",
            "must be a number of seconds > 0, not 0",
        ),
    ],
)
def test_each_problem_in_a_tree_is_reported_at_its_field(root: Any, field: str, detail: str) -> None:
    problems = problems_of(root)

    assert any(at == field and said.startswith(detail) for at, said in problems), problems


def test_the_document_needs_a_root_and_no_unknown_keys() -> None:
    assert problems_of(steps=[]) == [
        ("steps", f"unknown key; a bt workflow has {', '.join(DOCUMENT_KEYS)}, root, output"),
        ("root", "required"),
    ]


def test_the_output_may_only_read_leaves() -> None:
    assert problems_of(leaf("a"), output={"x": "$.steps.nope.output"}) == [
        ("output.x", "no tool or wait_signal leaf is named 'nope'")
    ]


def test_nodes_nest_at_most_so_deep() -> None:
    root: dict[str, Any] = leaf("a")
    for _ in range(MAX_DEPTH):
        root = {"invert": root}

    assert problems_of(root) == [("root" + ".invert" * MAX_DEPTH, f"nodes nest at most {MAX_DEPTH} deep")]
    assert tree(root["invert"]).decide(RUN_INPUT, {"a": fail()}) == succeeds({"a": None})


def test_every_problem_is_reported_at_once() -> None:
    root = {
        "sequence": [
            leaf("a", tool="Bad Tool"),
            {"selector": []},
            {"retry": {"times": 0, "child": leaf("a")}},
            {"condition": "$.steps.ghost.output"},
        ]
    }

    assert [field for field, _ in problems_of(root)] == [
        "root.sequence[0].tool",
        "root.sequence[1].selector",
        "root.sequence[2].retry.times",
        "root.sequence[2].retry.child.name",
        "root.sequence[3].condition",
    ]


# --- benchmark tree -----------------------------------------------------------------------------------------


def count_nodes(node: dict[str, Any]) -> int:
    children = [*node.get("sequence", []), *node.get("selector", [])]
    if "parallel" in node:
        children.extend(node["parallel"]["children"])
    if "invert" in node:
        children.append(node["invert"])
    if "tool" not in node:
        children.extend(node[kind]["child"] for kind in ("retry", "timeout", "repeat_until") if kind in node)
    return 1 + sum(count_nodes(child) for child in children)


@pytest.mark.parametrize("nodes", [18, 100, 1000])
def test_the_benchmark_tree_has_the_nodes_asked_for_and_a_run_of_echoes_succeeds(nodes: int) -> None:
    document = benchmark_document(nodes)
    wf = parse_bt(document)
    states: dict[str, StepState] = {}

    decision = wf.decide({"n": 0}, states)
    while decision.outcome is None:
        for start in decision.start:
            action = start.action
            states[start.key] = done(action.input) if isinstance(action, ToolCall) else StepState("queued")
        decision = wf.decide({"n": 0}, states)

    assert count_nodes(document["root"]) == nodes
    assert decision.outcome.state == "succeeded"


# --- properties over random trees and runs ----------------------------------------------------------------------


LEAVES = ("tool", "tool", "tool", "wait", "condition")
COMPOSITES = ("sequence", "selector", "parallel", "parallel", "retry", "timeout", "invert", "repeat_until")


@dataclass
class RandomTree:
    """Builds a valid random document; a node reads only leaves that come before it and not beside it."""

    draw: st.DrawFn
    leaves: int = 0
    budget: int = 16

    def node(self, readable: list[str], depth: int = 0) -> tuple[dict[str, Any], list[str]]:
        """A node, and the names of the leaves under it."""
        self.budget -= 1
        composite = self.budget > 0 and depth < 4 and (depth < 2 or self.draw(st.booleans()))
        kind = self.draw(st.sampled_from(COMPOSITES if composite else LEAVES))
        if kind == "tool":
            return self.tool(readable)
        if kind == "wait":
            name = self.name()
            return {"wait_signal": {"name": name, "signals": ["go"], "timeout_seconds": 5}}, [name]
        if kind == "condition":
            return {"condition": self.condition(readable)}, []
        if kind in ("sequence", "selector", "parallel"):
            children, names = self.children(readable, depth, in_turn=kind != "parallel")
            if kind != "parallel":
                return {kind: children}, names
            threshold = self.draw(st.integers(1, len(children)))
            return {"parallel": {"success_threshold": threshold, "children": children}}, names
        child, names = self.node(readable, depth + 1)
        if kind == "invert":
            return {"invert": child}, names
        if kind == "retry":
            return {"retry": {"times": self.draw(st.integers(1, 3)), "child": child}}, names
        if kind == "timeout":
            return {"timeout": {"seconds": 10, "child": child}}, names
        condition = self.condition(readable + names)
        return {"repeat_until": {"condition": condition, "max": self.draw(st.integers(1, 3)), "child": child}}, names

    def children(self, readable: list[str], depth: int, *, in_turn: bool) -> tuple[list[Any], list[str]]:
        children: list[Any] = []
        names: list[str] = []
        for _ in range(self.draw(st.integers(2, 4))):
            child, under = self.node(readable + names if in_turn else readable, depth + 1)
            children.append(child)
            names.extend(under)
        return children, names

    def tool(self, readable: list[str]) -> tuple[dict[str, Any], list[str]]:
        name = self.name()
        source = self.pick(readable)
        read = "$.input" if source is None else f"$.steps.{source}.output"
        return {"name": name, "tool": "echo", "input": {"from": read}}, [name]

    def condition(self, readable: list[str]) -> str:
        source = self.pick(readable)
        return "$.input.flag" if source is None else f"$.steps.{source}.output.ok == true"

    def pick(self, readable: list[str]) -> str | None:
        """Mostly a leaf to read, else None for the run input."""
        if not readable or self.draw(st.integers(0, 3)) == 0:
            return None
        return self.draw(st.sampled_from(readable))

    def name(self) -> str:
        self.leaves += 1
        return f"l{self.leaves}"


@st.composite
def random_trees(draw: st.DrawFn) -> BtWorkflow:
    root, _ = RandomTree(draw).node([])
    return parse_bt({"kind": "bt", "root": root})


@dataclass
class Run:
    """Records of a run driven by random results: every started instance is finished sooner or later."""

    plan: BtWorkflow
    data: st.DataObject
    records: dict[str, StepState] = field(default_factory=dict)
    actions: dict[str, Action] = field(default_factory=dict)

    def decide(self) -> Decision:
        decision = self.plan.decide(RUN_INPUT, self.records)
        keys = started(decision)
        assert decision == self.plan.decide(RUN_INPUT, dict(self.records))
        assert not set(keys) & self.records.keys()
        assert len(set(keys)) == len(keys)
        for start in decision.start:
            self.records[start.key] = StepState("queued", step=start.step)
            self.actions[start.key] = start.action
        return decision

    def open(self) -> list[str]:
        return [key for key, record in self.records.items() if record.state not in FINISHED]

    def finish_some(self) -> None:
        keys = self.open()
        for key in self.data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True)):
            self.records[key] = self.data.draw(results(self.actions[key]))


def results(action: Action) -> st.SearchStrategy[StepState]:
    if isinstance(action, Sleep):
        return st.just(done({"slept_seconds": action.seconds}))
    ok = st.builds(lambda ok: {"ok": ok}, st.booleans())
    if isinstance(action, AwaitSignal):
        return st.one_of(
            st.builds(lambda data: done({"signal": "go", "data": data}), ok),
            st.just(fail("timed out waiting for a signal (go)")),
        )
    return st.one_of(
        st.builds(done, ok),
        st.sampled_from([fail("boom"), fail("no worker", "dead"), fail(None, "cancelled")]),
        st.just(RUNNING),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=random_trees(), data=st.data())
def test_a_run_replays_the_same_never_restarts_a_key_never_stalls_and_keeps_its_outcome(
    plan: BtWorkflow, data: st.DataObject
) -> None:
    run = Run(plan, data)
    outcome = None
    for _ in range(500):
        decision = run.decide()
        if outcome is not None:
            # Leftovers finishing after the run ended must not change how it ended.
            assert decision.start == ()
            assert decision.outcome is not None
            assert (decision.outcome.state, decision.outcome.error) == (outcome.state, outcome.error)
        outcome = decision.outcome or outcome
        if not run.open():
            assert outcome is not None, "nothing runs and nothing starts, yet the run has not ended"
            return
        run.finish_some()
    pytest.fail("the run did not end")


# --- ticking on from the last decision ----------------------------------------------------------------------


@st.composite
def random_sequences(draw: st.DrawFn) -> BtWorkflow:
    """A random tree whose root is a sequence, the root a run ticks on from."""
    children, _ = RandomTree(draw).children([], 0, in_turn=True)
    return parse_bt({"kind": "bt", "root": {"sequence": children}})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=random_sequences(), data=st.data())
def test_ticking_on_from_the_last_decision_decides_as_a_tick_from_the_root(
    plan: BtWorkflow, data: st.DataObject
) -> None:
    names = [name.replace(".timeout", ".expired") for name in plan.steps]
    strays = [*plan.steps, *names, *(f"{name}#2" for name in names)]

    run_against_replays(plan, RUN_INPUT, data, lambda start: results(start.action), strays)


def test_the_benchmark_tree_ticked_result_by_result_decides_as_a_tick_from_the_root() -> None:
    plan = parse_bt(benchmark_document(60))
    records = Records()
    while (decision := plan.decide(RUN_INPUT, records)).outcome is None:
        assert decision == plan.decide(RUN_INPUT, dict(records))
        for start in decision.start:
            records.set(start.key, StepState("queued", step=start.step))
        key = next(key for key, record in records.items() if record.state == "queued" and ".timeout" not in key)
        records.set(key, done({"n": 0}))
    assert decision.outcome.state == "succeeded"
    # The fetch of the first group failing now (no engine records that) is met by a tick from the root.
    records.set("fetch-0", fail())

    assert plan.decide(RUN_INPUT, records) == fails("root.sequence[0].sequence[0]: 'fetch-0' failed: boom")
