"""The agent templates of examples/templates, each registered with its tools, its mock model deployments
(the scripts its agents follow) and its agents, and run on its input.json to its expected end on the real
stack: the model turns go through the gateway to the mock provider, the tool calls run in sandboxes."""

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from agentflow import Client, load_agent_file, load_model_file, load_tool_file, load_workflow_file

from tests.conftest import EXAMPLES, Stack

TEMPLATES = EXAMPLES / "templates"
TEMPLATE_NAMES = (
    "code_review",
    "bug_resolution",
    "fullstack_generation",
    "iterative_review",
    "conditional_branching",
    "research",
    "test_deterministic",
)


TOOL_FILES = sorted((TEMPLATES / "tools").glob("*.yaml"))


def run_tool(tool_file: Path, document: object) -> subprocess.CompletedProcess[str]:
    """The tool's program run on ``document`` as a sandbox runs it: stdin JSON, stdout JSON."""
    program = yaml.safe_load(tool_file.read_text())["runtime"]["files"]["main.py"]
    return subprocess.run(
        [sys.executable, str(tool_file.parent / program)],
        input=json.dumps(document),
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize("tool_file", TOOL_FILES, ids=lambda path: path.stem)
def test_a_template_tool_ships_its_program_and_refuses_malformed_input_with_a_reason(tool_file: Path) -> None:
    tool = yaml.safe_load(tool_file.read_text())
    assert tool["name"] == tool_file.stem and tool["runtime"]["command"] == ["python3", "main.py"]
    assert (tool_file.parent / tool["runtime"]["files"]["main.py"]).is_file()
    jsonschema.Draft202012Validator.check_schema(tool["input_schema"])
    refused = run_tool(tool_file, {"unexpected": 1})
    assert refused.returncode == 2 and refused.stdout == "" and refused.stderr.startswith(f"{tool['name']}: ")


def test_contract_check_compares_endpoints_however_their_path_parameters_are_written() -> None:
    checked = run_tool(
        TEMPLATES / "tools" / "contract-check.yaml",
        {
            "design": "GET /items/{id} reads one; DELETE /items/{id} removes it",
            "backend": '@app.get("/items/<int:item_id>")',
            "frontend": "fetch(`/items/${id}`)",
        },
    )
    answer = json.loads(checked.stdout)
    assert answer["ok"] is False and answer["endpoints"] == ["DELETE /items/{}", "GET /items/{}"]
    assert answer["missing_in_backend"] == answer["missing_in_frontend"] == ["DELETE /items/{}"]


def test_py_check_runs_the_code_block_of_a_markdown_answer_and_reports_each_case() -> None:
    answer = "Here it is:\n```python\ndef half(x):\n    return x / 2\n```\nDone."
    cases = [{"call": "half(4)", "expect": 2}, {"call": "half(None)"}]
    checked = json.loads(run_tool(TEMPLATES / "tools" / "py-check.yaml", {"code": answer, "cases": cases}).stdout)
    assert checked["code"] == "def half(x):\n    return x / 2\n" and checked["passed"] is False
    assert [result["ok"] for result in checked["results"]] == [True, False]
    assert checked["results"][1]["error"].startswith("TypeError: unsupported operand")


def register(af: Client, template: Path) -> str:
    """Register a template's deployments, agents and workflow (the tools first); the workflow's name."""
    for model in sorted(template.glob("models/*.yaml")):
        af.apply_model(load_model_file(model))
    for agent in sorted(template.glob("agents/*.yaml")):
        af.apply_agent(load_agent_file(agent))
    workflow = load_workflow_file(template / "workflow.yaml")
    af.apply_workflow(workflow)
    return str(workflow["name"])


@pytest.fixture(scope="module")
def runs(stack: Stack) -> Iterator[dict[str, str]]:
    """Every template registered for a tenant of this module's own (with its worker) and started at once:
    the run id of each."""
    tenant = f"templates-{secrets.token_hex(3)}"
    key = asyncio.run(stack.tenant_key(tenant))
    worker = stack.start_worker(tenant=tenant)
    try:
        with Client(api_url=stack.api_url, token=key) as af:
            for tool in [*sorted((TEMPLATES / "tools").glob("*.yaml")), EXAMPLES / "tools" / "mock-editor.yaml"]:
                af.register_tool(load_tool_file(tool))
            started = {}
            for name in TEMPLATE_NAMES:
                workflow = register(af, TEMPLATES / name)
                data = json.loads((TEMPLATES / name / "input.json").read_text())
                started[name] = af.start_run(workflow=workflow, input=data)["id"]
            yield started | {"_key": key}
    finally:
        worker.terminate()
        worker.wait(30)


def finished(stack: Stack, runs: dict[str, str], name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The template's run once it ended, checked to have succeeded, and its tasks by step."""
    with Client(api_url=stack.api_url, token=runs["_key"]) as af:
        run = af.wait_run(runs[name], timeout=120)
    assert run["state"] == "succeeded", (run["error"], [(t["step"], t["state"], t["error"]) for t in run["tasks"]])
    return run, {task["step"]: task for task in run["tasks"]}


def test_code_review_parses_reviews_architecture_and_quality_in_parallel_and_requests_changes(
    stack: Stack, runs: dict[str, str]
) -> None:
    run, steps = finished(stack, runs, "code_review")
    assert run["output"]["verdict"] == "changes requested" and run["output"]["functions"] == 1
    assert "## Architecture\n\nRequest changes: the login handler opens sqlite3" in run["output"]["report"]
    violations = steps["architecture/turn-1/call-0"]["output"]["violations"]
    assert violations == [{"import": "sqlite3", "rule": "handlers reach storage through a service, never a driver"}]
    rules = [finding["rule"] for finding in steps["quality/turn-1/call-0"]["output"]["findings"]]
    assert rules == ["docstring", "line-length", "bare-except", "print", "todo"]
    assert {"architecture/turn-2", "quality/turn-2", "report"} <= set(steps)


def test_bug_resolution_reproduces_the_bug_fixes_it_tests_the_fix_and_verifies_it(
    stack: Stack, runs: dict[str, str]
) -> None:
    run, steps = finished(stack, runs, "bug_resolution")
    reproduced = steps["reproduce/turn-1/call-0"]["output"]
    assert reproduced["passed"] is False
    assert reproduced["results"][0]["error"] == "ZeroDivisionError: division by zero"
    assert steps["test"]["output"]["passed"] is True
    assert run["output"]["fix"].startswith("def average(xs):\n    if not xs:")
    assert run["output"]["root_cause"].startswith("Root cause:")
    assert run["output"]["verification"].startswith("Verified:")
    assert steps["verify/turn-1/call-0"]["output"]["results"][0]["value"] == 0.0


def test_fullstack_generation_designs_the_api_writes_both_sides_in_parallel_and_they_integrate(
    stack: Stack, runs: dict[str, str]
) -> None:
    run, steps = finished(stack, runs, "fullstack_generation")
    conventions = steps["design/turn-1/call-0"]["output"]["hits"]
    assert conventions[0]["id"] == "C-1"
    integration = run["output"]["integration"]
    assert integration["ok"] is True, integration
    assert integration["endpoints"] == ["GET /todos", "PATCH /todos/{}", "POST /todos"]
    assert integration["backend_routes"] == integration["frontend_calls"] == integration["endpoints"]


def test_iterative_review_revises_round_after_round_until_the_quality_gate_passes(
    stack: Stack, runs: dict[str, str]
) -> None:
    run, steps = finished(stack, runs, "iterative_review")
    assert run["output"] | {"text": None} == {"text": None, "revision": 2, "score": 8, "passed": True}
    assert run["output"]["text"].count("[rev ") == 2
    assert steps["refine#1/gate"]["output"]["passed"] is False
    assert {"refine#1/review/turn-1", "refine#2/review/turn-1"} <= set(steps)
    assert not any(step.startswith("refine#3") for step in steps)


def test_conditional_branching_runs_only_the_branch_the_classifier_names(stack: Stack, runs: dict[str, str]) -> None:
    run, steps = finished(stack, runs, "conditional_branching")
    assert run["output"]["label"] == "bug"
    assert run["output"]["bug"].startswith("It matches the known issue T-101")
    assert run["output"]["feature"] is None and run["output"]["support"] is None
    assert steps["bug/turn-1/call-0"]["output"]["hits"][0]["id"] == "T-101"
    assert not any(step.startswith(("feature/", "support/")) for step in steps)


def test_research_runs_the_agents_the_coordinator_routes_to_and_skips_the_others(
    stack: Stack, runs: dict[str, str]
) -> None:
    run, steps = finished(stack, runs, "research")
    assert run["output"]["route"] == "research, writing"
    assert run["output"]["analysis"] is None and not any(step.startswith("analysis/") for step in steps)
    assert [hit["id"] for hit in steps["research/turn-1/call-0"]["output"]["hits"]] == ["S-1", "S-2"]
    assert "(S-1)" in run["output"]["findings"] and "La Rance" in run["output"]["article"]


def test_test_deterministic_reviews_with_tools_alone_and_calls_no_model(stack: Stack, runs: dict[str, str]) -> None:
    run, steps = finished(stack, runs, "test_deterministic")
    assert run["output"]["verdict"] == "changes requested" and run["output"]["findings"] == 5
    assert [v["import"] for v in run["output"]["violations"]] == ["sqlite3"]
    assert set(steps) == {"parse", "lint", "layers", "report"} and not run.get("usage")
