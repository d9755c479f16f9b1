"""The workflow builders produce the documents of workflow files, of every kind and with every key: each
template in examples/workflows is built in Python and compared with its file, and the server's planners
accept every built document."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from agentflow import BehaviorTree, StateMachine, Steps, ToolCall, Workflow, load_workflow_file
from agentflow.builder import (
    call,
    condition,
    go,
    invert,
    on_signal,
    on_timeout,
    parallel,
    repeat_until,
    retry,
    selector,
    sequence,
    timeout,
    wait_signal,
)

from control_plane.planning.kinds import parse_workflow

TEMPLATES = Path(__file__).resolve().parent.parent / "examples" / "workflows"


def _schema(field: str) -> dict[str, Any]:
    return {"type": "object", "required": [field], "properties": {field: {"type": "string", "minLength": 1}}}


# --- the templates, built in Python --------------------------------------------------------------------


def code_review() -> Workflow:
    return (
        Workflow(
            "code-review",
            "1.0.0",
            description="Reviews a change - statistics, a critique and a label in parallel, then one review.",
            input_schema=_schema("change"),
            output="$.steps.review.output",
        )
        .step("stats", "text-stats@1.0.0", input={"text": "$.input.change"})
        .step("critique", "mock-model@1.0.0", input={"prompt": "$.input.change", "task": "critique"})
        .step("label", "mock-model@1.0.0", input={"prompt": "$.input.change", "task": "classify"})
        .step(
            "review",
            "json-transform@1.0.0",
            needs=["stats", "critique", "label"],
            input={
                "data": {
                    "stats": "$.steps.stats.output",
                    "critique": "$.steps.critique.output",
                    "label": "$.steps.label.output",
                },
                "pick": {"words": "stats.words", "remarks": "critique.text", "kind": "label.text"},
            },
        )
    )


def doc_review() -> Workflow:
    return (
        Workflow(
            "doc-review",
            "1.0.0",
            description="Reviews a document - statistics, a summary and a label in parallel, then one report.",
            input_schema=_schema("text"),
            output="$.steps.report.output",
        )
        .step("stats", "text-stats@1.0.0", input={"text": "$.input.text"})
        .step("summary", "mock-model@1.0.0", input={"prompt": "$.input.text", "task": "summarize"})
        .step("label", "mock-model@1.0.0", input={"prompt": "$.input.text", "task": "classify"})
        .step(
            "report",
            "json-transform@1.0.0",
            needs=["stats", "summary", "label"],
            input={
                "data": {
                    "stats": "$.steps.stats.output",
                    "summary": "$.steps.summary.output",
                    "label": "$.steps.label.output",
                },
                "pick": {
                    "words": "stats.words",
                    "sentences": "stats.sentences",
                    "top_word": "stats.top_words.0.0",
                    "summary": "summary.text",
                    "label": "label.text",
                },
            },
        )
    )


def conditional_triage() -> Workflow:
    ticket = "$.input.ticket"
    return (
        Workflow(
            "conditional-triage",
            "1.0.0",
            description="Routes a ticket by its label - bugs get a reproduction summary, the rest an answer.",
            input_schema=_schema("ticket"),
            output={
                "label": "$.steps.classify.output.text",
                "bug": "$.steps.bug.output",
                "answer": "$.steps.answer.output",
            },
        )
        .step("classify", "mock-model@1.0.0", input={"prompt": ticket, "task": "classify"})
        .step(
            "bug",
            "mock-model@1.0.0",
            needs=["classify"],
            when='$.steps.classify.output.text == "bug"',
            input={"prompt": ticket, "task": "summarize"},
        )
        .step(
            "answer",
            "mock-model@1.0.0",
            needs=["classify"],
            when='$.steps.classify.output.text != "bug"',
            input={"prompt": ticket, "task": "critique"},
        )
        .step(
            "route",
            "json-transform@1.0.0",
            needs=["bug", "answer"],
            input={
                "data": {
                    "label": "$.steps.classify.output.text",
                    "bug": "$.steps.bug.output",
                    "answer": "$.steps.answer.output",
                },
                "pick": {"label": "label"},
            },
        )
    )


def iterative_review() -> Workflow:
    rounds = (
        Steps()
        .step(
            "revise",
            "mock-editor@1.0.0",
            input={"task": "revise", "text": "$.input.draft", "previous": "$.steps.refine.output"},
        )
        .step(
            "score",
            "mock-editor@1.0.0",
            needs=["revise"],
            input={"task": "score", "text": "$.steps.revise.output.text", "pass_mark": 8},
        )
    )
    return Workflow(
        "iterative-review",
        "1.0.0",
        description="Revise and score a draft until it passes a quality gate of 8, at most 5 rounds.",
        input_schema=_schema("draft"),
        output="$.steps.refine.output",
    ).loop("refine", rounds, until="$.steps.score.output.passed", max_iterations=5)


def bug_resolution() -> StateMachine:
    return (
        StateMachine(
            "bug-resolution",
            "1.0.0",
            initial="reproduce",
            max_steps=12,
            description="Reproduce, fix and verify a bug, looping back to the fix until verification passes.",
            input_schema=_schema("report"),
        )
        .call(
            "reproduce",
            "mock-model@1.0.0",
            input={"prompt": "$.input.report", "task": "summarize"},
            transitions=[go("fix")],
        )
        .call(
            "fix",
            "mock-editor@1.0.0",
            input={
                "task": "revise",
                "text": "$.steps.reproduce.output.text",
                "previous": {"revise": "$.steps.fix.output", "score": "$.steps.verify.output"},
            },
            transitions=[go("verify")],
        )
        .call(
            "verify",
            "mock-editor@1.0.0",
            input={"task": "score", "text": "$.steps.fix.output.text", "pass_mark": 8},
            transitions=[go("resolved", when="$.steps.verify.output.passed"), go("fix")],
        )
        .final("resolved", output={"fix": "$.steps.fix.output.text", "score": "$.steps.verify.output.score"})
    )


def approval() -> StateMachine:
    schema = _schema("text")
    schema["properties"]["timeout_seconds"] = {"type": "number"}
    return (
        StateMachine(
            "approval",
            "1.0.0",
            initial="draft",
            description="Draft an announcement and publish it only once a person approves it.",
            input_schema=schema,
        )
        .call(
            "draft",
            "mock-model@1.0.0",
            input={"prompt": "$.input.text", "task": "summarize"},
            transitions=[go("await_approval")],
        )
        .wait(
            "await_approval",
            ["approve", "reject"],
            timeout_seconds=3600,
            transitions=[on_signal("approve", "publish"), on_signal("reject", "rejected"), on_timeout("expired")],
        )
        .call("publish", "text-stats@1.0.0", input={"text": "$.steps.draft.output.text"}, transitions=[go("published")])
        .final(
            "published",
            output={
                "announcement": "$.steps.draft.output.text",
                "approved_by": "$.steps.await_approval.output.data.by",
                "words": "$.steps.publish.output.words",
            },
        )
        .failed("rejected", "rejected by the reviewer")
        .failed("expired", "nobody approved the announcement within the hour")
    )


def research() -> BehaviorTree:
    return BehaviorTree(
        "research",
        "1.0.0",
        sequence(
            selector(
                call("primary", "fail@1.0.0", input={"reason": "the primary source is offline"}),
                call("backup", "mock-model@1.0.0", input={"prompt": "$.input.topic", "task": "summarize"}),
            ),
            call("summarize", "text-stats@1.0.0", input={"text": "$.steps.backup.output.text"}),
            condition("$.steps.summarize.output.words > 0"),
        ),
        description="Gather material from a primary source or its backup, then summarize it.",
        input_schema=_schema("topic"),
        output={"source": "$.steps.backup.output.text", "words": "$.steps.summarize.output.words"},
    )


BUILT: dict[str, Callable[[], Workflow | StateMachine | BehaviorTree]] = {
    "code-review": code_review,
    "doc-review": doc_review,
    "conditional-triage": conditional_triage,
    "iterative-review": iterative_review,
    "bug-resolution": bug_resolution,
    "approval": approval,
    "research": research,
}


def test_every_template_is_built() -> None:
    assert sorted(path.stem for path in TEMPLATES.glob("*.yaml")) == sorted(BUILT)


@pytest.mark.parametrize("template", sorted(BUILT))
def test_the_builder_produces_the_template_file(template: str) -> None:
    document = BUILT[template]().to_dict()

    assert document == load_workflow_file(TEMPLATES / f"{template}.yaml")
    assert parse_workflow(document).kind == document["kind"]


# --- dag ------------------------------------------------------------------------------------------------


def test_builder_produces_a_dag_document() -> None:
    workflow = (
        Workflow("triage", "1.0.0", output="$.steps.summarize.output")
        .step("fetch", "http-get@1.0.0", input={"url": "$.input.url"})
        .step("classify", "classifier@2", needs=["fetch"], queue="gpu")
        .step("summarize", "llm@1", input={"text": "$.steps.fetch.output"}, needs=("fetch", "classify"))
    )

    assert workflow.to_dict() == {
        "name": "triage",
        "version": "1.0.0",
        "kind": "dag",
        "steps": [
            {"name": "fetch", "tool": "http-get@1.0.0", "input": {"url": "$.input.url"}},
            {"name": "classify", "tool": "classifier@2", "needs": ["fetch"], "queue": "gpu"},
            {
                "name": "summarize",
                "tool": "llm@1",
                "input": {"text": "$.steps.fetch.output"},
                "needs": ["fetch", "classify"],
            },
        ],
        "output": "$.steps.summarize.output",
    }


def test_dag_steps_and_loops_take_every_key() -> None:
    charge_retry = {"max_attempts": 3, "backoff_seconds": 0.5, "retry_on": ["timeout"]}
    rounds = (
        Steps()
        .step("draft", "llm@1", input={"text": "$.input.text"}, retry={"max_attempts": 2})
        .step("check", "checker@1", needs=["draft"], continue_on_failure=True, fallback="lenient-checker@1")
    )
    workflow = (
        Workflow("payment", "2.0.0", description="Charges, then polishes.", input_schema={"type": "object"})
        .step(
            "charge",
            "charge@1",
            input={"amount": "$.input.amount"},
            queue="payments",
            retry=charge_retry,
            compensate=ToolCall("refund@1", input={"id": "$.steps.charge.output.id"}, queue="payments"),
            fallback=ToolCall("charge-backup@1", input={"amount": "$.input.amount", "slow": True}, queue="slow"),
        )
        .step("notify", "mail@1", needs=["charge"], when="$.steps.charge.output.ok", compensate="unmail@1")
        .loop(
            "polish",
            rounds,
            "$.steps.check.output.passed",
            3,
            needs=["charge"],
            when="$.input.polish",
            continue_on_failure=True,
            fallback=ToolCall("polish-once@1", queue="gpu"),
        )
    )

    document = workflow.to_dict()

    assert document == {
        "name": "payment",
        "version": "2.0.0",
        "kind": "dag",
        "description": "Charges, then polishes.",
        "input_schema": {"type": "object"},
        "steps": [
            {
                "name": "charge",
                "tool": "charge@1",
                "input": {"amount": "$.input.amount"},
                "queue": "payments",
                "retry": charge_retry,
                "compensate": {"tool": "refund@1", "input": {"id": "$.steps.charge.output.id"}, "queue": "payments"},
                "fallback": {
                    "tool": "charge-backup@1",
                    "input": {"amount": "$.input.amount", "slow": True},
                    "queue": "slow",
                },
            },
            {
                "name": "notify",
                "tool": "mail@1",
                "needs": ["charge"],
                "when": "$.steps.charge.output.ok",
                "compensate": {"tool": "unmail@1"},
            },
            {
                "name": "polish",
                "needs": ["charge"],
                "when": "$.input.polish",
                "continue_on_failure": True,
                "fallback": {"tool": "polish-once@1", "queue": "gpu"},
                "loop": {
                    "until": "$.steps.check.output.passed",
                    "max_iterations": 3,
                    "steps": [
                        {
                            "name": "draft",
                            "tool": "llm@1",
                            "input": {"text": "$.input.text"},
                            "retry": {"max_attempts": 2},
                        },
                        {
                            "name": "check",
                            "tool": "checker@1",
                            "needs": ["draft"],
                            "continue_on_failure": True,
                            "fallback": {"tool": "lenient-checker@1"},
                        },
                    ],
                },
            },
        ],
    }
    assert parse_workflow(document).kind == "dag"


def test_builder_without_output_or_steps() -> None:
    assert Workflow("empty", "1").to_dict() == {"name": "empty", "version": "1", "kind": "dag", "steps": []}


def test_duplicate_step_names_are_refused() -> None:
    workflow = Workflow("w", "1").step("a", "t@1")

    with pytest.raises(ValueError, match="workflow w: a step named 'a' already exists"):
        workflow.step("a", "u@1")


def test_step_names_are_unique_across_loops() -> None:
    workflow = Workflow("w", "1").step("a", "t@1").loop("l", Steps().step("b", "t@1"), "true", 2)

    with pytest.raises(ValueError, match="workflow w: a step named 'b' already exists"):
        workflow.step("b", "u@1")
    with pytest.raises(ValueError, match="workflow w: a step named 'a' already exists"):
        workflow.loop("m", Steps().step("a", "t@1"), "true", 2)
    with pytest.raises(ValueError, match="workflow w: a step named 'n' already exists"):
        workflow.loop("n", Steps().step("n", "t@1"), "true", 2)
    with pytest.raises(ValueError, match="loop steps: a step named 'c' already exists"):
        Steps().step("c", "t@1").step("c", "t@1")
    assert [step["name"] for step in workflow.to_dict()["steps"]] == ["a", "l"]


def test_to_dict_returns_a_copy() -> None:
    steps = Steps().step("b", "t@1", input={"x": 1})
    workflow = Workflow("w", "1", input_schema={"type": "object"}).step("a", "t@1").loop("l", steps, "true", 1)
    document = workflow.to_dict()
    document["steps"][0]["tool"] = "changed"
    document["steps"][1]["loop"]["steps"][0]["input"]["x"] = 2
    document["input_schema"]["type"] = "array"
    steps.step("c", "t@1")

    assert (
        workflow.to_dict()
        == Workflow("w", "1", input_schema={"type": "object"})
        .step("a", "t@1")
        .loop("l", Steps().step("b", "t@1", input={"x": 1}), "true", 1)
        .to_dict()
    )


# --- fsm ------------------------------------------------------------------------------------------------


def test_state_machine_takes_every_key() -> None:
    machine = (
        StateMachine("order", "1", initial="charge", max_steps=20)
        .call(
            "charge",
            "charge@1",
            input={"amount": "$.input.amount"},
            queue="payments",
            retry={"max_attempts": 3},
            compensate=ToolCall("refund@1", input={"id": "$.steps.charge.output.id"}),
            transitions=[go("pause", when="$.steps.charge.output.ok"), go("declined")],
            on_failure="broken",
        )
        .sleep("pause", 1.5, transitions=[go("confirm")], on_failure="broken")
        .wait("confirm", ["yes"], transitions=[on_signal("yes", "done")], on_failure="broken")
        .final("done")
        .failed("declined", "the card was declined")
        .failed("broken")
    )

    document = machine.to_dict()

    assert document == {
        "name": "order",
        "version": "1",
        "kind": "fsm",
        "initial": "charge",
        "max_steps": 20,
        "states": {
            "charge": {
                "tool": "charge@1",
                "input": {"amount": "$.input.amount"},
                "queue": "payments",
                "retry": {"max_attempts": 3},
                "compensate": {"tool": "refund@1", "input": {"id": "$.steps.charge.output.id"}},
                "transitions": [{"when": "$.steps.charge.output.ok", "to": "pause"}, {"to": "declined"}],
                "on_failure": "broken",
            },
            "pause": {"sleep_seconds": 1.5, "transitions": [{"to": "confirm"}], "on_failure": "broken"},
            "confirm": {
                "wait": {"signals": ["yes"]},
                "transitions": [{"signal": "yes", "to": "done"}],
                "on_failure": "broken",
            },
            "done": {"final": True},
            "declined": {"final": True, "status": "failed", "error": "the card was declined"},
            "broken": {"final": True, "status": "failed"},
        },
    }
    assert parse_workflow(document).kind == "fsm"


def test_duplicate_state_names_are_refused() -> None:
    machine = StateMachine("m", "1", initial="a").call("a", "t@1", transitions=[go("b")])

    adds: list[Callable[[], StateMachine]] = [
        lambda: machine.final("a"),
        lambda: machine.failed("a", "no"),
        lambda: machine.wait("a", ["s"]),
        lambda: machine.sleep("a", 1),
        lambda: machine.call("a", "u@1"),
    ]
    for add in adds:
        with pytest.raises(ValueError, match="state machine m: a state named 'a' already exists"):
            add()
    assert machine.to_dict()["states"] == {"a": {"tool": "t@1", "transitions": [{"to": "b"}]}}


def test_state_machine_to_dict_returns_a_copy() -> None:
    machine = StateMachine("m", "1", initial="a").call("a", "t@1", input={"x": 1}, transitions=[go("b")]).final("b")
    machine.to_dict()["states"]["a"]["input"]["x"] = 2

    assert machine.to_dict()["states"]["a"]["input"] == {"x": 1}


# --- bt -------------------------------------------------------------------------------------------------


def test_behavior_tree_takes_every_node_and_key() -> None:
    root = sequence(
        wait_signal("go", ["start"], timeout_seconds=600),
        parallel(
            call("a", "search@1", input={"q": "$.input.topic"}, queue="web", retry={"max_attempts": 2}),
            call("b", "search@2", compensate=ToolCall("forget@1", input={"id": "$.steps.b.output.id"}, queue="web")),
            success_threshold=1,
        ),
        retry(timeout(call("c", "slow@1", compensate="undo@1"), 30), 3),
        invert(condition("$.steps.a.output == null")),
        repeat_until(call("d", "improve@1"), "$.steps.d.output.score >= 8", 5),
    )
    tree = BehaviorTree("find", "1", root, description="Finds things.", input_schema={"type": "object"})

    document = tree.to_dict()

    assert document == {
        "name": "find",
        "version": "1",
        "kind": "bt",
        "description": "Finds things.",
        "input_schema": {"type": "object"},
        "root": {
            "sequence": [
                {"wait_signal": {"name": "go", "signals": ["start"], "timeout_seconds": 600}},
                {
                    "parallel": {
                        "children": [
                            {
                                "name": "a",
                                "tool": "search@1",
                                "input": {"q": "$.input.topic"},
                                "queue": "web",
                                "retry": {"max_attempts": 2},
                            },
                            {
                                "name": "b",
                                "tool": "search@2",
                                "compensate": {
                                    "tool": "forget@1",
                                    "input": {"id": "$.steps.b.output.id"},
                                    "queue": "web",
                                },
                            },
                        ],
                        "success_threshold": 1,
                    }
                },
                {
                    "retry": {
                        "times": 3,
                        "child": {
                            "timeout": {
                                "seconds": 30,
                                "child": {"name": "c", "tool": "slow@1", "compensate": {"tool": "undo@1"}},
                            }
                        },
                    }
                },
                {"invert": {"condition": "$.steps.a.output == null"}},
                {
                    "repeat_until": {
                        "condition": "$.steps.d.output.score >= 8",
                        "max": 5,
                        "child": {"name": "d", "tool": "improve@1"},
                    }
                },
            ]
        },
    }
    assert parse_workflow(document).kind == "bt"


def test_duplicate_leaf_names_are_refused() -> None:
    with pytest.raises(ValueError, match="behavior tree t: more than one leaf is named 'a'"):
        BehaviorTree("t", "1", selector(call("a", "x@1"), retry(call("a", "y@1"), 2)))
    with pytest.raises(ValueError, match="behavior tree t: more than one leaf is named 'w'"):
        BehaviorTree("t", "1", parallel(invert(wait_signal("w", ["s"])), timeout(call("w", "x@1"), 5)))
    with pytest.raises(ValueError, match="more than one leaf is named 'r'"):
        BehaviorTree("t", "1", sequence(call("r", "x@1"), repeat_until(call("r", "x@1"), "true", 2)))


def test_a_tool_input_that_looks_like_a_node_is_not_a_leaf() -> None:
    leaf = call("a", "x@1", input={"name": "a", "tool": "x@1", "sequence": [{"name": "a", "tool": "x@1"}]})

    assert BehaviorTree("t", "1", leaf).to_dict()["root"] == leaf


def test_behavior_tree_to_dict_returns_a_copy() -> None:
    tree = BehaviorTree("t", "1", sequence(call("a", "x@1")), output={"a": "$.steps.a.output"})
    document = tree.to_dict()
    document["root"]["sequence"][0]["tool"] = "changed"
    document["output"]["a"] = "changed"

    assert tree.to_dict() == {
        "name": "t",
        "version": "1",
        "kind": "bt",
        "root": {"sequence": [{"name": "a", "tool": "x@1"}]},
        "output": {"a": "$.steps.a.output"},
    }
