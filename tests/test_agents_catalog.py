"""Agents as documents against the real stack: applied with their tools pinned, immutable per version, every
problem of a document at its field in one answer, `af agent apply/ls/get`, the SDK's `Agent` builder, and one
tenant never seeing or naming another's agents."""

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentflow import Agent, Client
from agentflow.cli import cli
from click.testing import CliRunner

from control_plane.planning.agent import compile_instructions
from tests.conftest import Stack

PROBLEM = "urn:agentflow:problem:"
LOOKUP = {
    "name": "lookup",
    "version": "1",
    "runtime": {"command": ["python3", "-c", "import sys; sys.stdout.write(sys.stdin.read())"]},
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
}


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Iterator[tuple[str, httpx.Client]]:
    """A tenant of this module's own, with the lookup tool and a mock model deployment."""
    name = f"agents-{secrets.token_hex(3)}"
    key = asyncio.run(stack.tenant_key(name))
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        assert http.post("/v1/tools", json=LOOKUP).status_code == 201
        assert http.post("/v1/models", json={"name": "agent-mock", "provider": "mock", "tier": "tier1"}).is_success
        yield key, http


def _agent(**fields: Any) -> dict[str, Any]:
    return {
        "name": "researcher",
        "version": "1",
        "instructions": "Research {{$.input.topic}}.",
        "model": "agent-mock",
    } | fields


def test_an_agent_is_applied_with_its_tools_pinned_then_read_back_and_its_versions_are_immutable(
    tenant: tuple[str, httpx.Client],
) -> None:
    _, http = tenant
    document = _agent(tools=["lookup"], approval=["lookup"], limits={"max_turns": 4})
    created = http.post("/v1/agents", json=document)
    assert created.status_code == 201, created.text
    assert created.json()["spec"]["pins"] == {"tools": {"lookup": "1"}, "agents": {}}
    assert http.post("/v1/agents", json=document).status_code == 200  # the same content: unchanged
    changed = http.post("/v1/agents", json=document | {"instructions": "Something else."})
    assert changed.status_code == 409 and changed.json()["type"] == PROBLEM + "duplicate-version"
    stored = http.get("/v1/agents/researcher/versions/1").json()["spec"]
    assert stored["tools"] == ["lookup"] and stored["limits"]["max_turns"] == 4
    assert [item["name"] for item in http.get("/v1/agents").json()["items"]] == ["researcher"]
    assert http.get("/v1/agents/researcher/versions/9").status_code == 404


def test_every_problem_of_an_agent_document_is_reported_at_its_field_in_one_answer(
    tenant: tuple[str, httpx.Client],
) -> None:
    _, http = tenant
    document = _agent(
        name="broken",
        instructions="Read {{$.inptu..x}}",
        model="no-such-model",
        tools=["lookup", "nosuch"],
        handoffs=["ghost"],
        approval=["delete-everything"],
        output_schema={"type": "nonsense"},
    )
    answer = http.post("/v1/agents", json=document)
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    found = {(p["field"], p["type"]) for p in answer.json()["problems"]}
    assert found == {
        ("instructions", "validation-error"),
        ("model", "model-not-found"),
        ("tools[1]", "unknown-tool"),
        ("handoffs[0]", "unknown-agent"),
        ("approval[0]", "validation-error"),
        ("output_schema", "validation-error"),
    }
    shape = http.post("/v1/agents", json=_agent(limits={"max_turns": 0}))
    assert shape.status_code == 422 and shape.json()["field"] == "limits.max_turns"


def test_af_agent_apply_reads_a_yaml_file_and_af_agent_ls_and_get_show_it(
    stack: Stack, tenant: tuple[str, httpx.Client], tmp_path: Path
) -> None:
    key, _ = tenant
    runner = CliRunner(env={"COLUMNS": "200"})

    def factory(url: str | None, token: str | None) -> Client:
        return Client(api_url=stack.api_url, token=key)

    document = tmp_path / "writer.yaml"
    document.write_text("name: writer\nversion: 1\ninstructions: Write about {{$.input.topic}}\nmodel: tier1\n")
    applied = runner.invoke(cli, ["agent", "apply", str(document)], obj=factory)
    assert applied.exit_code == 0, applied.output
    assert applied.output.strip() == "agent writer@1 created"
    listed = runner.invoke(cli, ["agent", "ls"], obj=factory)
    (row,) = [line for line in listed.output.splitlines() if line.startswith("writer ")]
    assert "tier1" in row
    shown = runner.invoke(cli, ["agent", "get", "writer@1", "--output", "json"], obj=factory)
    assert json.loads(shown.output)["spec"]["instructions"] == "Write about {{$.input.topic}}"
    document.write_text("name: writer\nversion: 2\ninstructions: x\nmodel: tier1\ntools: [nosuch]\n")
    refused = runner.invoke(cli, ["agent", "apply", str(document)], obj=factory)
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "nosuch" in refused.output


def test_the_sdk_agent_builder_makes_the_document_an_agent_file_holds(
    stack: Stack, tenant: tuple[str, httpx.Client]
) -> None:
    key, _ = tenant
    built = Agent(
        name="reviewer",
        version="1.0.1",
        instructions="Review {{$.input.diff}}",
        model="agent-mock",
        tools=("lookup@1",),
        handoffs=("researcher",),
        max_turns=3,
        output_schema={"type": "object", "required": ["verdict"]},
    )
    with Client(api_url=stack.api_url, token=key) as af:
        af.apply_agent(_agent(name="researcher", version="2"))
        stored = af.apply_agent(built.to_dict())
    spec = stored["spec"]
    assert {k: v for k, v in spec.items() if k != "pins"} == built.to_dict()
    assert spec["pins"] == {"tools": {"lookup": "1"}, "agents": {"researcher": "2"}}


def test_one_tenant_never_sees_nor_names_another_tenants_agents(stack: Stack, tenant: tuple[str, httpx.Client]) -> None:
    _, own = tenant
    own.post("/v1/agents", json=_agent(name="private", version="1"))
    other_key = asyncio.run(stack.tenant_key(f"intruder-{secrets.token_hex(3)}"))
    with httpx.Client(base_url=stack.api_url, headers={"Authorization": f"Bearer {other_key}"}) as intruder:
        assert intruder.get("/v1/agents").json() == {"items": []}
        assert intruder.get("/v1/agents/private/versions/latest").status_code == 404
        intruder.post("/v1/models", json={"name": "own-mock", "provider": "mock", "tier": "tier1"})
        answer = intruder.post("/v1/agents", json=_agent(name="thief", model="own-mock", agents=["private"]))
        assert answer.status_code == 422 and answer.json()["type"] == PROBLEM + "unknown-agent"
        assert answer.json()["field"] == "agents[0]"
        uses_model = intruder.post("/v1/agents", json=_agent(name="thief", model="agent-mock"))
        assert uses_model.status_code == 422 and uses_model.json()["type"] == PROBLEM + "model-not-found"


def test_instructions_render_each_placeholder_from_the_step_input() -> None:
    template = compile_instructions("Find {{$.input.topic}} in {{ $.input.sources }} now")
    rendered = template.render({"input": {"topic": "tides", "sources": ["a", "b"]}})
    assert rendered == 'Find tides in ["a","b"] now'
