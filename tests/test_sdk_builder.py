"""The workflow builder produces the document of a DAG workflow file."""

import pytest
from agentflow import Workflow


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


def test_builder_without_output_or_steps() -> None:
    assert Workflow("empty", "1").to_dict() == {"name": "empty", "version": "1", "kind": "dag", "steps": []}


def test_duplicate_step_names_are_refused() -> None:
    workflow = Workflow("w", "1").step("a", "t@1")

    with pytest.raises(ValueError, match="a step named 'a' already exists"):
        workflow.step("a", "u@1")


def test_to_dict_returns_a_copy() -> None:
    workflow = Workflow("w", "1").step("a", "t@1")
    workflow.to_dict()["steps"][0]["tool"] = "changed"

    assert workflow.to_dict()["steps"][0]["tool"] == "t@1"
