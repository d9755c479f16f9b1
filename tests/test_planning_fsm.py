"""The FSM planner: checking state-machine documents and walking runs through their states."""

import copy
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.planning.fsm import DEFAULT_MAX_STEPS, FsmWorkflow, chain_document, parse_fsm
from control_plane.planning.model import (
    AwaitSignal,
    Decision,
    RunOutcome,
    Sleep,
    Start,
    StepState,
    ToolCall,
    ToolRef,
)
from control_plane.planning.problems import WorkflowInvalid
from control_plane.planning.records import Records
from tests.planning_replays import run_against_replays

RUN_INPUT = {"text": "a first idea"}

# The document of the module docstring's example: draft and review loop until the score is high enough,
# then a human approves (or rejects, or lets the wait time out) and a timer runs before the end.
REVIEW: dict[str, Any] = {
    "name": "review",
    "version": "1.0.0",
    "kind": "fsm",
    "input_schema": {"type": "object"},
    "initial": "draft",
    "max_steps": 20,
    "states": {
        "draft": {
            "tool": "mock-model@1.0.0",
            "queue": "gpu",
            "input": {"text": "$.input.text", "feedback": "$.steps.review.output.feedback"},
            "retry": {"max_attempts": 2},
            "compensate": {"tool": "unpublish", "input": {"text": "$.steps.draft.output.text"}},
            "transitions": [{"to": "review"}],
        },
        "review": {
            "tool": "reviewer",
            "input": {"draft": "$.steps.draft.output.text"},
            "transitions": [
                {"when": "$.steps.review.output.score >= 8", "to": "wait_approval"},
                {"to": "draft"},
            ],
            "on_failure": "give_up",
        },
        "wait_approval": {
            "wait": {"signals": ["approve", "reject"], "timeout_seconds": 3600},
            "transitions": [
                {"signal": "approve", "to": "pause"},
                {"signal": "reject", "to": "rejected"},
                {"timeout": True, "to": "expired"},
            ],
        },
        "pause": {"sleep_seconds": 5, "transitions": [{"to": "done"}]},
        "done": {"final": True, "output": {"text": "$.steps.draft.output.text", "by": "$.steps.wait_approval.output"}},
        "rejected": {"final": True, "status": "failed", "error": "rejected by the reviewer"},
        "expired": {"final": True, "status": "failed", "error": "nobody approved in time"},
        "give_up": {"final": True, "status": "failed"},
    },
}
WF = parse_fsm(REVIEW)


def ok(output: Any = None) -> StepState:
    return StepState("succeeded", output)


def failed(error: str | None, state: str = "failed") -> StepState:
    return StepState(state, error=error)


def started(decision: Decision) -> list[tuple[str, str]]:
    assert decision.outcome is None
    return [(start.key, start.step) for start in decision.start]


def call(decision: Decision) -> ToolCall:
    (start,) = decision.start
    assert isinstance(start.action, ToolCall)
    return start.action


def outcome(decision: Decision) -> RunOutcome:
    assert decision.start == ()
    assert decision.outcome is not None
    return decision.outcome


# Records of a run that drafted twice: the first review asked for changes, the second approved the draft.
TWO_ROUNDS = {
    "draft": ok({"text": "v1"}),
    "review": ok({"score": 3, "feedback": "shorter"}),
    "draft#2": ok({"text": "v2"}),
    "review#2": ok({"score": 9}),
}


def test_the_first_visit_of_a_state_reads_null_for_the_states_not_visited_yet() -> None:
    decision = WF.decide(RUN_INPUT, {})
    assert decision == Decision(
        (
            Start(
                "draft",
                "draft",
                ToolCall("mock-model", "1.0.0", "gpu", {"text": "a first idea", "feedback": None}),
            ),
        ),
        None,
    )


def test_a_loop_visits_states_again_under_numbered_keys_reading_the_latest_outputs() -> None:
    records: dict[str, StepState] = {}
    assert started(WF.decide(RUN_INPUT, records)) == [("draft", "draft")]
    records["draft"] = ok({"text": "v1"})
    assert call(WF.decide(RUN_INPUT, records)).input == {"draft": "v1"}
    records["review"] = ok({"score": 3, "feedback": "shorter"})
    decision = WF.decide(RUN_INPUT, records)
    assert started(decision) == [("draft#2", "draft")]
    assert call(decision).input == {"text": "a first idea", "feedback": "shorter"}
    records["draft#2"] = ok({"text": "v2"})
    decision = WF.decide(RUN_INPUT, records)
    assert started(decision) == [("review#2", "review")]
    assert call(decision).input == {"draft": "v2"}
    records["review#2"] = ok({"score": 9})
    assert WF.decide(RUN_INPUT, records) == Decision(
        (Start("wait_approval", "wait_approval", AwaitSignal(("approve", "reject"), 3600)),), None
    )


@pytest.mark.parametrize("state", ["queued", "running"])
def test_an_unfinished_instance_makes_the_run_wait(state: str) -> None:
    assert WF.decide(RUN_INPUT, {"draft": ok({"text": "v1"}), "review": StepState(state)}) == Decision((), None)


def test_an_approve_signal_leads_through_the_timer_to_the_rendered_output() -> None:
    approved = {**TWO_ROUNDS, "wait_approval": ok({"signal": "approve", "data": {"by": "ann"}})}
    assert WF.decide(RUN_INPUT, approved) == Decision((Start("pause", "pause", Sleep(5)),), None)
    finished = WF.decide(RUN_INPUT, {**approved, "pause": ok({"slept_seconds": 5})})
    assert outcome(finished) == RunOutcome(
        "succeeded", {"text": "v2", "by": {"signal": "approve", "data": {"by": "ann"}}}, None
    )


def test_a_reject_signal_ends_the_run_in_a_failed_final_state_with_its_error() -> None:
    rejected = {**TWO_ROUNDS, "wait_approval": ok({"signal": "reject", "data": None})}
    assert outcome(WF.decide(RUN_INPUT, rejected)) == RunOutcome("failed", None, "rejected by the reviewer")


def test_a_wait_that_times_out_takes_the_timeout_transition() -> None:
    timed_out = {**TWO_ROUNDS, "wait_approval": failed("timed out after 3600s")}
    assert outcome(WF.decide(RUN_INPUT, timed_out)) == RunOutcome("failed", None, "nobody approved in time")


def test_a_wait_that_fails_otherwise_fails_the_run_naming_the_state() -> None:
    cancelled = {**TWO_ROUNDS, "wait_approval": failed(None, "cancelled")}
    assert outcome(WF.decide(RUN_INPUT, cancelled)).error == "state 'wait_approval' failed: cancelled"


def test_a_signal_no_transition_expects_fails_the_run_naming_the_state() -> None:
    odd = {**TWO_ROUNDS, "wait_approval": ok({"signal": "shrug", "data": None})}
    assert outcome(WF.decide(RUN_INPUT, odd)).error == "no transition of state 'wait_approval' matches"


@pytest.mark.parametrize("state", ["failed", "dead", "cancelled"])
def test_a_failed_action_goes_to_its_on_failure_state(state: str) -> None:
    records = {"draft": ok({"text": "v1"}), "review": failed("model overloaded", state)}
    assert outcome(WF.decide(RUN_INPUT, records)) == RunOutcome("failed", None, "the run ended in state 'give_up'")


def test_a_failed_action_without_on_failure_fails_the_run_with_its_error() -> None:
    assert outcome(WF.decide(RUN_INPUT, {"draft": failed("attempts exhausted", "dead")})) == RunOutcome(
        "failed", None, "state 'draft' failed: attempts exhausted"
    )


def test_on_failure_can_lead_back_into_the_walk() -> None:
    retrying = _doc(
        work={"tool": "echo", "transitions": [{"to": "done"}], "on_failure": "cool_down"},
        cool_down={"sleep_seconds": 30, "transitions": [{"to": "work"}]},
        done={"final": True, "output": "$.steps.work.output"},
    )
    wf = parse_fsm(retrying)
    records = {"work": failed("busy"), "cool_down": ok({"slept_seconds": 30})}
    assert started(wf.decide(None, records)) == [("work#2", "work")]
    assert outcome(wf.decide(None, {**records, "work#2": ok(7)})) == RunOutcome("succeeded", 7, None)


def test_no_matching_transition_fails_the_run_naming_the_state() -> None:
    wf = parse_fsm(
        _doc(
            work={"tool": "echo", "transitions": [{"when": "$.steps.work.output > 1", "to": "done"}]},
            done={"final": True},
        )
    )
    assert outcome(wf.decide(None, {"work": ok(0)})).error == "no transition of state 'work' matches"
    assert outcome(wf.decide(None, {"work": ok(2)})) == RunOutcome("succeeded", None, None)


def test_transitions_are_tried_in_order_and_the_first_that_holds_is_taken() -> None:
    wf = parse_fsm(
        _doc(
            work={
                "tool": "echo",
                "transitions": [
                    {"when": "$.steps.work.output.n > 5", "to": "big"},
                    {"when": "$.steps.work.output.n > 0", "to": "small"},
                    {"to": "none"},
                ],
            },
            big={"final": True, "output": "big"},
            small={"final": True, "output": "small"},
            none={"final": True, "output": "none"},
        )
    )
    for n, expected in [(9, "big"), (3, "small"), (0, "none"), (None, "none")]:
        assert outcome(wf.decide(None, {"work": ok({"n": n})})).output == expected


def test_a_wait_transition_can_test_the_data_of_the_signal() -> None:
    wf = parse_fsm(
        _doc(
            ask={
                "wait": {"signals": ["answer"]},
                "transitions": [{"when": "$.steps.ask.output.data.yes", "to": "yes"}, {"to": "no"}],
            },
            yes={"final": True, "output": "yes"},
            no={"final": True, "output": "no"},
        )
    )
    assert started(wf.decide(None, {})) == [("ask", "ask")]
    assert outcome(wf.decide(None, {"ask": ok({"signal": "answer", "data": {"yes": True}})})).output == "yes"
    assert outcome(wf.decide(None, {"ask": ok({"signal": "answer", "data": None})})).output == "no"


def test_a_run_that_exceeds_max_steps_fails() -> None:
    wf = parse_fsm({**REVIEW, "max_steps": 3})
    records = {"draft": ok({"text": "v1"}), "review": ok({"score": 1}), "draft#2": ok({"text": "v2"})}
    assert outcome(wf.decide(RUN_INPUT, records)).error == (
        "max_steps (3) reached in state 'review' before a final state"
    )


def test_max_steps_counts_step_instances_not_the_final_state() -> None:
    wf = parse_fsm(chain_document(3))
    assert wf.max_steps == 3
    records = {"s0": ok({"n": 1}), "s1": ok({"n": 1}), "s2": ok({"n": 1})}
    assert outcome(wf.decide({"n": 1}, records)) == RunOutcome("succeeded", {"n": 1}, None)


def test_max_steps_defaults_to_a_hundred() -> None:
    document = copy.deepcopy(REVIEW)
    del document["max_steps"]
    assert parse_fsm(document).max_steps == DEFAULT_MAX_STEPS == 100


def test_records_off_the_walk_do_not_change_the_decision() -> None:
    stray = {"draft": ok({"text": "v1"}), "pause": ok({"slept_seconds": 5}), "draft#7": failed("old")}
    assert started(WF.decide(RUN_INPUT, stray)) == [("review", "review")]


def test_input_templates_keep_literals_and_unescape_dollars() -> None:
    wf = parse_fsm(
        _doc(
            work={
                "tool": "echo",
                "input": {"price": "$$5", "list": ["$.input.a", 1, None, "plain"], "deep": "$.input.a.b[2]"},
                "transitions": [{"to": "done"}],
            },
            done={"final": True},
        )
    )
    assert call(wf.decide({"a": 1}, {})).input == {"price": "$5", "list": [1, 1, None, "plain"], "deep": None}


def test_a_state_without_input_gets_the_run_input() -> None:
    wf = parse_fsm(_doc(work={"tool": "echo", "transitions": [{"to": "done"}]}, done={"final": True}))
    assert call(wf.decide({"x": 1}, {})) == ToolCall("echo", None, "default", {"x": 1})


def test_the_initial_state_may_be_final() -> None:
    wf = parse_fsm(_doc(done={"final": True, "output": "$.input.x"}))
    assert outcome(wf.decide({"x": 4}, {})) == RunOutcome("succeeded", 4, None)


def test_a_workflow_describes_its_steps_and_signals() -> None:
    assert WF.kind == "fsm"
    assert WF.signals == frozenset({"approve", "reject"})
    assert set(WF.steps) == {"draft", "review", "wait_approval", "pause"}
    draft = WF.steps["draft"]
    assert (draft.name, draft.field, draft.tool) == (
        "draft",
        "states.draft",
        ToolRef("states.draft.tool", "mock-model", "1.0.0"),
    )
    assert draft.retry == {"max_attempts": 2}
    assert draft.compensate is not None
    assert draft.compensate.tool == ToolRef("states.draft.compensate.tool", "unpublish", None)
    assert draft.compensate.input.render({"steps": {"draft": {"output": {"text": "v2"}}}}) == {"text": "v2"}
    assert WF.steps["review"].compensate is None
    for name in ("wait_approval", "pause"):
        assert (WF.steps[name].tool, WF.steps[name].retry, WF.steps[name].compensate) == (None, None, None)


def test_a_thousand_state_chain_is_walked_to_its_end() -> None:
    wf = parse_fsm(chain_document(1000))
    records = {f"s{i}": ok({"n": 42}) for i in range(1000)}
    assert started(wf.decide({"n": 42}, dict(list(records.items())[:999]))) == [("s999", "s999")]
    assert outcome(wf.decide({"n": 42}, records)) == RunOutcome("succeeded", {"n": 42}, None)
    records["s500"] = ok({"n": 42, "stop": True})
    assert outcome(wf.decide({"n": 42}, records)) == RunOutcome("succeeded", {"n": None}, None)


# --- validation -------------------------------------------------------------------------------------------


def _doc(initial: str | None = None, **states: Any) -> dict[str, Any]:
    return {"kind": "fsm", "initial": initial or next(iter(states)), "states": states}


def _valid() -> dict[str, Any]:
    return _doc(
        work={
            "tool": "echo",
            "transitions": [{"when": "$.steps.work.output.ok", "to": "done"}, {"to": "ask"}],
        },
        ask={
            "wait": {"signals": ["approve", "reject"], "timeout_seconds": 60},
            "transitions": [{"signal": "approve", "to": "done"}, {"timeout": True, "to": "work"}],
        },
        done={"final": True},
    )


def _problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowInvalid) as raised:
        parse_fsm(document)
    return [(problem.field, problem.detail) for problem in raised.value.problems]


def test_the_valid_document_of_the_validation_cases_is_accepted() -> None:
    assert isinstance(parse_fsm(_valid()), FsmWorkflow)


Change = Callable[[dict[str, Any]], Any]
_S = "states"


def _set(*path: Any, value: Any) -> Change:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(*path: Any) -> Change:
    def change(document: dict[str, Any]) -> None:
        target = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _add_state(name: str, state: Any) -> Change:
    return _set(_S, name, value=state)


def _both(*changes: Change) -> Change:
    def change(document: dict[str, Any]) -> None:
        for each in changes:
            each(document)

    return change


_TO_DONE = [{"to": "done"}]
_WORK_T = (_S, "work", "transitions")
_ASK_T = (_S, "ask", "transitions")

CASES: dict[str, tuple[Change, list[tuple[str, str]]]] = {
    "missing initial": (_delete("initial"), [("initial", "required")]),
    "unknown initial": (_set("initial", value="nowhere"), [("initial", "unknown state 'nowhere'")]),
    "unknown transition target": (
        _set(*_WORK_T, 1, "to", value="nowhere"),
        [("states.work.transitions[1].to", "unknown state 'nowhere'")],
    ),
    "unknown on_failure": (
        _set(_S, "work", "on_failure", value="nowhere"),
        [("states.work.on_failure", "unknown state 'nowhere'")],
    ),
    "on_failure not a name": (_set(_S, "work", "on_failure", value=3), [("states.work.on_failure", "state name")]),
    "unreachable state": (
        _add_state("lost", {"tool": "echo", "transitions": _TO_DONE}),
        [("states.lost", "unreachable from the initial state 'work'")],
    ),
    "unreachable final state": (
        _add_state("unused", {"final": True}),
        [("states.unused", "unreachable from the initial state 'work'")],
    ),
    "dead-end state": (
        _set(_S, "ask", "transitions", value=[]),
        [("states.ask.transitions", "a state that is not final needs at least one transition")],
    ),
    "dead-end state with null transitions": (
        _set(_S, "ask", "transitions", value=None),
        [("states.ask.transitions", "a state that is not final needs at least one transition")],
    ),
    "dead-end state without the key": (
        _delete(_S, "ask", "transitions"),
        [("states.ask.transitions", "a state that is not final needs at least one transition")],
    ),
    "states that cannot reach a final state": (
        _both(
            _set(*_WORK_T, 0, value={"when": "$.input.spin", "to": "spin"}),
            _add_state("spin", {"sleep_seconds": 1, "transitions": [{"to": "spun"}]}),
            _add_state("spun", {"tool": "echo", "transitions": [{"to": "spin"}], "on_failure": "spin"}),
        ),
        [
            ("states.spin", "no final state can be reached from it"),
            ("states.spun", "no final state can be reached from it"),
        ],
    ),
    "no final state": (
        _both(_delete(_S, "done"), _set(*_WORK_T, value=[{"to": "ask"}]), _set(*_ASK_T, value=[{"to": "work"}])),
        [("states", "no state is final, so no run could end")],
    ),
    "bad condition": (
        _set(*_WORK_T, 0, "when", value="$.steps.work.output.ok =="),
        [("states.work.transitions[0].when", "column")],
    ),
    "condition not a string": (
        _set(*_WORK_T, 0, "when", value=True),
        [("states.work.transitions[0].when", "must be a condition written as a string")],
    ),
    "signal on an action state": (
        _set(*_WORK_T, 0, value={"signal": "approve", "to": "done"}),
        [("states.work.transitions[0].signal", "only a wait state has signal transitions")],
    ),
    "unknown signal": (
        _set(*_ASK_T, 0, "signal", value="maybe"),
        [("states.ask.transitions[0].signal", "unknown signal 'maybe'; the state waits for approve, reject")],
    ),
    "timeout on a wait without timeout_seconds": (
        _delete(_S, "ask", "wait", "timeout_seconds"),
        [("states.ask.transitions[1].timeout", "the state's wait has no timeout_seconds, so it never times out")],
    ),
    "timeout on an action state": (
        _set(*_WORK_T, 0, value={"timeout": True, "to": "done"}),
        [("states.work.transitions[0].timeout", "only a wait state times out")],
    ),
    "timeout that is not true": (
        _set(*_ASK_T, 1, "timeout", value=False),
        [("states.ask.transitions[1].timeout", "must be true, not False")],
    ),
    "two guards on one transition": (
        _set(*_ASK_T, 0, "when", value="$.input.x"),
        [("states.ask.transitions[0]", "at most one of when, signal and timeout, not when and signal")],
    ),
    "unconditional transition not last": (
        _set(*_WORK_T, value=[{"to": "ask"}, {"when": "$.input.x", "to": "done"}]),
        [("states.work.transitions[0]", "a transition with no when, signal or timeout must be the last")],
    ),
    "transition without to": (_delete(*_WORK_T, 1, "to"), [("states.work.transitions[1].to", "required")]),
    "transition to a non-name": (_set(*_WORK_T, 1, "to", value=5), [("states.work.transitions[1].to", "state name")]),
    "transition not a mapping": (
        _set(*_WORK_T, 1, value="ask"),
        [("states.work.transitions[1]", "a transition must be a mapping")],
    ),
    "transitions not a list": (
        _set(*_WORK_T, value={"to": "done"}),
        [("states.work.transitions", "must be a list of transitions")],
    ),
    "a state of two kinds": (
        _set(_S, "work", "sleep_seconds", value=3),
        [
            (
                "states.work",
                "a state has exactly one of tool, agent, plan, wait, sleep_seconds, final, not tool and sleep_seconds",
            )
        ],
    ),
    "a state of no kind": (
        _delete(_S, "work", "tool"),
        [("states.work", "a state has exactly one of tool, agent, plan, wait, sleep_seconds, final")],
    ),
    "unknown top-level key": (_set("stats", value=1), [("stats", "unknown key; an fsm workflow has")]),
    "unknown key of an action state": (
        _set(_S, "work", "signal", value="x"),
        [("states.work.signal", "unknown key; an action state has tool, queue, input")],
    ),
    "transitions on a final state": (
        _set(_S, "done", "transitions", value=[]),
        [("states.done.transitions", "unknown key; a final state has final, status, error, output")],
    ),
    "unknown key of a transition": (
        _set(*_WORK_T, 1, "unless", value="x"),
        [("states.work.transitions[1].unless", "unknown key; a transition has to, when, signal, timeout")],
    ),
    "unknown key of a wait": (
        _set(_S, "ask", "wait", "signal", value="x"),
        [("states.ask.wait.signal", "unknown key; a wait has signals, timeout_seconds")],
    ),
    "input reading an unknown state": (
        _set(_S, "work", "input", value={"a": ["$.steps.nowhere.output"]}),
        [("states.work.input.a[0]", "unknown state 'nowhere'")],
    ),
    "condition reading an unknown state": (
        _set(*_WORK_T, 0, "when", value="$.steps.nowhere.output.ok or $.input.ok"),
        [("states.work.transitions[0].when", "unknown state 'nowhere'")],
    ),
    "output reading an unknown state": (
        _set(_S, "done", "output", value="$.steps.nowhere.output"),
        [("states.done.output", "unknown state 'nowhere'")],
    ),
    "a path reading a final state": (
        _set(_S, "done", "output", value="$.steps.done.output"),
        [("states.done.output", "state 'done' is final, so it has no output")],
    ),
    "bad path in an input": (
        _set(_S, "work", "input", value="$.stepz"),
        [("states.work.input", "bad path '$.stepz'")],
    ),
    "compensation reading another state": (
        _set(_S, "work", "compensate", value={"tool": "undo", "input": "$.steps.ask.output"}),
        [("states.work.compensate.input", "a compensation reads only $.input and the output of 'work' it undoes")],
    ),
    "bad compensation": (_set(_S, "work", "compensate", value="undo"), [("states.work.compensate", "mapping")]),
    "bad retry": (_set(_S, "work", "retry", value=3), [("states.work.retry", "retry policy")]),
    "bad tool": (_set(_S, "work", "tool", value="Echo!"), [("states.work.tool", "a tool as name@version")]),
    "bad queue": (_set(_S, "work", "queue", value="a.b"), [("states.work.queue", "a queue name")]),
    "bad max_steps": (_set("max_steps", value=0), [("max_steps", "must be an integer >= 1, not 0")]),
    "max_steps not an integer": (_set("max_steps", value=2.5), [("max_steps", "must be an integer >= 1")]),
    "states missing": (_delete(_S), [("states", "required"), ("initial", "unknown state 'work'")]),
    "states empty": (_set(_S, value={}), [("states", "at least one"), ("initial", "unknown state 'work'")]),
    "bad state name": (
        _both(_add_state("Bad Name", {"final": True}), _set(*_WORK_T, 1, "to", value="Bad Name")),
        [('states["Bad Name"]', "a state's name must be a name matching"), ("states.ask", "unreachable")],
    ),
    "state not a mapping": (_set(_S, "ask", value="wait"), [("states.ask", "a state must be a mapping")]),
    "wait not a mapping": (
        _set(_S, "ask", "wait", value=["approve"]),
        [("states.ask.wait", "must be a mapping with signals")],
    ),
    "wait without signals": (_delete(_S, "ask", "wait", "signals"), [("states.ask.wait.signals", "required")]),
    "wait with no signals": (_set(_S, "ask", "wait", "signals", value=[]), [("states.ask.wait.signals", "at least")]),
    "bad and repeated signals": (
        _set(_S, "ask", "wait", "signals", value=["approve", "Nope", "approve", "reject"]),
        [
            ("states.ask.wait.signals[1]", "must be a signal name"),
            ("states.ask.wait.signals[2]", "'approve' is listed twice"),
        ],
    ),
    "negative timeout": (
        _set(_S, "ask", "wait", "timeout_seconds", value=-1),
        [("states.ask.wait.timeout_seconds", "must be a number >= 0")],
    ),
    "negative sleep": (
        _add_state("work", {"sleep_seconds": -1, "transitions": [{"to": "ask"}]}),
        [("states.work.sleep_seconds", "must be a number >= 0")],
    ),
    "null sleep": (
        _add_state("work", {"sleep_seconds": None, "transitions": [{"to": "ask"}]}),
        [("states.work.sleep_seconds", "required")],
    ),
    "final that is false": (_set(_S, "done", "final", value=False), [("states.done.final", "must be true")]),
    "unknown final status": (
        _set(_S, "done", "status", value="maybe"),
        [("states.done.status", "must be succeeded or failed, not 'maybe'")],
    ),
    "error on a succeeding final state": (
        _set(_S, "done", "error", value="oops"),
        [("states.done.error", "only a final state with status: failed has an error")],
    ),
    "error not a string": (
        _both(_set(_S, "done", "status", value="failed"), _set(_S, "done", "error", value=["oops"])),
        [("states.done.error", "must be a string")],
    ),
    "output on a failing final state": (
        _both(_set(_S, "done", "status", value="failed"), _set(_S, "done", "output", value="x")),
        [("states.done.output", "a final state with status: failed has no output")],
    ),
}


@pytest.mark.parametrize(("change", "expected"), list(CASES.values()), ids=list(CASES))
def test_a_document_with_a_problem_is_refused_at_the_exact_field(
    change: Change, expected: list[tuple[str, str]]
) -> None:
    document = _valid()
    change(document)
    problems = _problems(document)
    assert [field for field, _ in problems] == [field for field, _ in expected], problems
    for (_, detail), (_, fragment) in zip(problems, expected, strict=True):
        assert fragment in detail


def test_every_problem_is_reported_at_once() -> None:
    document = _valid()
    for change in (
        _set("initial", value="nowhere"),
        _set(*_WORK_T, 1, "to", value="elsewhere"),
        _set(*_ASK_T, 0, "signal", value="maybe"),
        _set(_S, "done", "colour", value="red"),
    ):
        change(document)
    assert [field for field, _ in _problems(document)] == [
        "states.ask.transitions[0].signal",
        "states.done.colour",
        "initial",
        "states.work.transitions[1].to",
    ]


def test_the_review_example_names_every_transition_at_its_field() -> None:
    document = copy.deepcopy(REVIEW)
    document["states"]["review"]["transitions"][1]["to"] = "redraft"
    assert ("states.review.transitions[1].to", "unknown state 'redraft'") in _problems(document)


# --- replay properties ----------------------------------------------------------------------------------------

_OUTCOMES = ("queued", "running", "succeeded", "failed", "cancelled", "dead")


@st.composite
def _machines(draw: st.DrawFn) -> dict[str, Any]:
    """A valid FSM of random states and transitions: a chain s0 -> s1 -> ... -> f0 keeps every state
    reachable and able to end, and guarded transitions anywhere make loops and shortcuts."""
    names = [f"s{i}" for i in range(draw(st.integers(1, 6)))]
    states = {name: _machine_state(draw, names, [*names[i + 1 :], "f0"][0]) for i, name in enumerate(names)}
    targets = {state.get("on_failure") for state in states.values()}
    targets |= {transition["to"] for state in states.values() for transition in state["transitions"]}
    states["f0"] = {"final": True, "output": {"v": f"$.steps.{names[-1]}.output.v"}}
    if "f1" in targets:
        states["f1"] = {"final": True, "status": "failed", "error": "f1"}
    return {"kind": "fsm", "initial": "s0", "max_steps": draw(st.integers(1, 12)), "states": states}


def _machine_state(draw: st.DrawFn, names: list[str], following: str) -> dict[str, Any]:
    targets = st.sampled_from([*names, "f0", "f1"])
    kind = draw(st.sampled_from(["tool", "wait", "sleep"]))
    transitions: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        guard = draw(st.sampled_from(["when", "signal", "timeout"] if kind == "wait" else ["when"]))
        if guard == "when":
            path = draw(st.sampled_from(["$.input.v", *(f"$.steps.{name}.output.v" for name in names)]))
            transitions.append({"when": f"{path} == {draw(st.integers(0, 2))}", "to": draw(targets)})
        elif guard == "signal":
            transitions.append({"signal": draw(st.sampled_from(["a", "b"])), "to": draw(targets)})
        else:
            transitions.append({"timeout": True, "to": draw(targets)})
    state: dict[str, Any] = {"transitions": [*transitions, {"to": following}]}
    if kind == "tool":
        state |= {"tool": "echo", "input": {"v": f"$.steps.{draw(st.sampled_from(names))}.output.v"}}
    elif kind == "wait":
        state["wait"] = {"signals": ["a", "b"], "timeout_seconds": 10}
    else:
        state["sleep_seconds"] = 1
    if draw(st.booleans()):
        state["on_failure"] = draw(targets)
    return state


def _record(draw: Callable[[st.SearchStrategy[Any]], Any], action: Any) -> StepState:
    state = draw(st.sampled_from(_OUTCOMES))
    if state == "succeeded":
        if isinstance(action, AwaitSignal):
            return StepState(state, {"signal": draw(st.sampled_from(["a", "b", "c"])), "data": None})
        return StepState(state, {"v": draw(st.integers(0, 2))})
    return StepState(state, error=draw(st.sampled_from([None, "timed out after 10s", "boom"])))


def _check_replay(wf: FsmWorkflow, run_input: Any, records: dict[str, StepState]) -> Decision:
    decision = wf.decide(run_input, records)
    shuffled = list(records.items())
    random.Random(len(records)).shuffle(shuffled)
    assert wf.decide(copy.deepcopy(run_input), dict(shuffled)) == decision
    assert not {start.key for start in decision.start} & records.keys()
    for start in decision.start:
        assert start.key.partition("#")[0] == start.step
    assert decision.outcome is None or decision.start == ()
    return decision


@settings(max_examples=200, deadline=None)
@given(_machines(), st.integers(0, 2), st.data())
def test_replaying_the_same_records_gives_the_same_decision_and_never_restarts_a_key(
    document: dict[str, Any], v: int, data: st.DataObject
) -> None:
    wf = parse_fsm(document)
    run_input = {"v": v}
    records: dict[str, StepState] = {}
    for _ in range(30):
        decision = _check_replay(wf, run_input, records)
        if decision.outcome is not None:
            return
        if decision.start:
            (start,) = decision.start
            records[start.key] = _record(data.draw, start.action)
        else:
            # The run waits on an unfinished instance: finish it, as a worker would.
            key = next(key for key, state in records.items() if state.state in ("queued", "running"))
            records[key] = data.draw(st.sampled_from([StepState("succeeded", {"v": 1}), StepState("failed")]))
    pytest.fail("a run makes at most max_steps (12) steps, each finished within two records")


@settings(max_examples=200, deadline=None)
@given(_machines(), st.data())
def test_any_records_at_all_give_a_decision_that_starts_no_recorded_key(
    document: dict[str, Any], data: st.DataObject
) -> None:
    wf = parse_fsm(document)
    keys = st.sampled_from([name if n == 1 else f"{name}#{n}" for name in wf.steps for n in range(1, 4)])
    outputs = st.sampled_from([None, {"v": 1}, {"signal": "a", "data": 1}, "text"])
    errors = st.sampled_from([None, "timed out", "boom"])
    records = data.draw(st.dictionaries(keys, st.builds(StepState, st.sampled_from(_OUTCOMES), outputs, errors)))
    _check_replay(wf, {"v": 0}, records)


# --- walking on from the last decision ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(_machines(), st.data())
def test_walking_on_from_the_last_decision_decides_as_a_walk_from_the_initial_state(
    document: dict[str, Any], data: st.DataObject
) -> None:
    wf = parse_fsm(document)
    strays = [name if n == 1 else f"{name}#{n}" for name in wf.steps for n in range(1, 4)]

    run_against_replays(wf, {"v": 1}, data, lambda start: st.just(_record(data.draw, start.action)), strays)


def test_a_chain_walks_on_decision_by_decision_and_walks_again_when_a_record_it_used_changes() -> None:
    wf = parse_fsm(chain_document(50))
    records = Records()
    run_input = {"n": 0}
    for i in range(50):
        decision = wf.decide(run_input, records)
        assert decision == wf.decide(run_input, dict(records))
        assert decision.start[0].key == f"s{i}" and call(decision).input == {"n": i - 1 if i else 0}
        records.set(f"s{i}", StepState("succeeded", {"n": i}))
    assert wf.decide(run_input, records).outcome == RunOutcome("succeeded", {"n": 49}, None)

    records.set("s3", StepState("failed", error="boom"))

    assert wf.decide(run_input, records) == Decision((), RunOutcome("failed", None, "state 's3' failed: boom"))
