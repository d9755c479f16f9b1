"""Every bad request is answered with an ``application/problem+json`` document: a stable ``type``, a ``detail``
for a person and the offending ``field``. Raw HTTP against the real control plane, so the status codes,
headers and bodies are exactly what any client sees."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.usefixtures("examples_registered")

PROBLEM = "urn:agentflow:problem:"
NOT_A_RUN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.token}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as client:
        yield client


def tool_spec(name: str, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    runtime = {"command": ["python3", "main.py"], "files": {"main.py": "print('{}')\n"}}
    return {"name": name, "version": version, "runtime": runtime, **extra}


def dag(name: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "version": "1.0.0", "kind": "dag", "steps": steps, **extra}


def assert_problem(response: httpx.Response, status: int, slug: str, field: str | None) -> dict[str, Any]:
    """The response is a problem document of ``slug`` naming ``field``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM + slug, body
    assert body["status"] == status, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["title"], str) and body["title"], body
    assert body["field"] == field, body
    return body


# --- queues no worker serves ------------------------------------------------------------------------


def test_a_run_on_a_queue_no_worker_serves_is_warned_of_or_refused_when_a_worker_is_required(
    http: httpx.Client,
) -> None:
    request = {"tool": "noop", "input": {}, "queue": "nobody-pulls-this"}
    refused = http.post("/v1/runs", json={**request, "require_worker": True})
    assert "nobody-pulls-this" in assert_problem(refused, 409, "no-worker", "queue")["detail"]

    accepted = http.post("/v1/runs", json=request)
    assert accepted.status_code == 201, accepted.text
    (warning,) = accepted.json()["warnings"]
    assert (warning["type"], warning["queue"], warning["field"]) == ("no-worker", "nobody-pulls-this", "queue")
    http.post(f"/v1/runs/{accepted.json()['id']}/cancel")

    batch = http.post("/v1/runs:batch", json={"runs": [{**request, "require_worker": True}, {**request}]})
    refused_item, warned_item = batch.json()["items"]
    assert refused_item["problem"]["type"] == PROBLEM + "no-worker"
    assert warned_item["warnings"][0]["queue"] == "nobody-pulls-this"
    http.post(f"/v1/runs/{warned_item['id']}/cancel")

    served = http.post("/v1/runs", json={"tool": "noop", "input": {}, "require_worker": True})
    assert served.status_code == 201, served.text
    assert "warnings" not in served.json()


# --- names and versions -----------------------------------------------------------------------------


def test_a_run_of_an_unknown_tool_is_unknown_tool_on_the_tool_field(http: httpx.Client) -> None:
    body = assert_problem(
        http.post("/v1/runs", json={"tool": "no-such-tool", "input": {}}), 422, "unknown-tool", "tool"
    )
    assert "no-such-tool" in body["detail"]


def test_a_version_that_is_not_numbers_is_a_bad_version(http: httpx.Client) -> None:
    assert_problem(http.post("/v1/runs", json={"tool": "noop@1.x", "input": {}}), 422, "bad-version", "tool")
    assert_problem(http.post("/v1/tools", json=tool_spec("bad-version", "1.x")), 422, "bad-version", "version")


@pytest.mark.parametrize(
    "name",
    ["a.b", "a*", "a>", "ünï", "x" * 64, "Upper", "-leading-dash", "with space"],
    ids=["dot", "star", "gt", "non-ascii", "64-chars", "uppercase", "leading-dash", "space"],
)
def test_a_tool_name_that_could_break_a_subject_is_an_invalid_name(http: httpx.Client, name: str) -> None:
    body = assert_problem(http.post("/v1/tools", json=tool_spec(name)), 422, "invalid-name", "name")
    assert "a-z, 0-9" in body["detail"]


def test_the_longest_valid_tool_name_is_accepted(http: httpx.Client) -> None:
    response = http.post("/v1/tools", json=tool_spec("x" * 63))
    assert response.status_code in (200, 201), response.text


def test_a_run_on_a_queue_with_a_dot_is_an_invalid_name_on_the_queue_field(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"tool": "noop", "input": {}, "queue": "a.b"})
    assert_problem(response, 422, "invalid-name", "queue")


def test_a_tool_on_a_queue_with_a_wildcard_is_an_invalid_name_on_the_queue_field(http: httpx.Client) -> None:
    response = http.post("/v1/tools", json=tool_spec("wild-queue", queue="q.>"))
    assert_problem(response, 422, "invalid-name", "queue")


# --- bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["/v1/runs", "/v1/tools", "/v1/workflows", "/v1/runs:batch"])
def test_a_body_that_is_not_json_is_malformed_json(http: httpx.Client, route: str) -> None:
    response = http.post(route, content=b'{"tool": "noop", ', headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["type"] == PROBLEM + "malformed-json", body
    assert body["detail"], body


@pytest.mark.parametrize(
    ("route", "document", "field"),
    [
        ("/v1/runs", {"tool": 5}, "tool"),
        ("/v1/runs", {"tool": "noop", "queue": ["default"]}, "queue"),
        ("/v1/tools", {"name": "t", "version": "1", "runtime": {"command": []}}, "runtime.command"),
        (
            "/v1/tools",
            {"name": "t", "version": "1", "runtime": {"command": ["x"]}, "limits": {"memory_mb": 1}},
            "limits.memory_mb",
        ),
        ("/v1/tools", {"name": "t", "version": "1"}, "runtime"),
        ("/v1/tools", {"name": "t", "version": "1", "runtime": {}}, "runtime.command"),
        ("/v1/runs:batch", {"runs": []}, "runs"),
    ],
    ids=[
        "tool-not-a-string",
        "queue-not-a-string",
        "empty-command",
        "memory-too-small",
        "missing-runtime",
        "missing-command",
        "empty-batch",
    ],
)
def test_a_body_of_the_wrong_shape_is_a_validation_error_naming_the_field(
    http: httpx.Client, route: str, document: dict[str, Any], field: str
) -> None:
    assert_problem(http.post(route, json=document), 422, "validation-error", field)


@pytest.mark.parametrize(
    ("route", "document"),
    [
        ("/v1/runs", {"tool": "noop", "input": {}, "colour": "blue"}),
        ("/v1/tools", {**tool_spec("extra-key"), "colour": "blue"}),
    ],
    ids=["run", "tool"],
)
def test_an_unknown_field_is_a_validation_error_naming_it(
    http: httpx.Client, route: str, document: dict[str, Any]
) -> None:
    body = assert_problem(http.post(route, json=document), 422, "validation-error", "colour")
    assert "colour" in body["detail"]


def test_a_run_naming_both_a_tool_and_a_workflow_is_a_validation_error(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"tool": "noop", "workflow": "doc-review", "input": {}})
    assert_problem(response, 422, "validation-error", "workflow")


def test_an_input_that_breaks_the_tools_schema_names_the_input_field(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"tool": "text-stats@1.0.0", "input": {"text": 5}})
    body = assert_problem(response, 422, "input-schema-mismatch", "input")
    assert body["detail"].startswith("input.text"), body

    missing = http.post("/v1/runs", json={"tool": "text-stats", "input": {}})
    assert_problem(missing, 422, "input-schema-mismatch", "input")


def test_an_input_that_breaks_the_workflows_schema_names_the_input_field(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"workflow": "doc-review", "input": {"text": ""}})
    body = assert_problem(response, 422, "input-schema-mismatch", "input")
    assert body["detail"].startswith("input.text"), body


# --- what a tool ships --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "files", "missing"),
    [
        (["python3", "main.py"], {}, "main.py"),
        (["sh", "bin/run.sh"], {"run.sh": "echo {}"}, "bin/run.sh"),
        (["./run"], {"main.py": ""}, "./run"),
        (["node", "./index.js"], {"main.js": ""}, "./index.js"),
    ],
)
def test_a_tool_whose_command_runs_a_file_it_does_not_ship_is_refused_at_registration(
    http: httpx.Client, command: list[str], files: dict[str, str], missing: str
) -> None:
    spec = tool_spec("unshipped", runtime={"command": command, "files": files})
    body = assert_problem(http.post("/v1/tools", json=spec), 422, "validation-error", "runtime.command")
    assert repr(missing) in body["detail"], body


@pytest.mark.parametrize(
    ("name", "command", "files"),
    [
        ("ships-dotted", ["python3", "./main.py"], {"main.py": "print('{}')"}),
        ("ships-nested", ["sh", "bin/run.sh"], {"bin/run.sh": "echo {}"}),
        ("ships-code", ["python3", "-c", "print('{}')"], {}),
        ("ships-module", ["python3", "-m", "json.tool"], {}),
        ("ships-absolute", ["python3", "/usr/lib/python3/dist-packages/x.py"], {}),
        ("ships-on-path", ["cat"], {}),
    ],
)
def test_a_tool_whose_command_runs_only_shipped_or_outside_files_is_registered(
    http: httpx.Client, name: str, command: list[str], files: dict[str, str]
) -> None:
    response = http.post("/v1/tools", json=tool_spec(name, runtime={"command": command, "files": files}))
    assert response.status_code in (200, 201), response.text


def test_a_whole_number_version_is_taken_as_its_text_and_a_decimal_one_is_refused(http: httpx.Client) -> None:
    tool = http.post("/v1/tools", json={**tool_spec("numbered"), "version": 3})
    assert tool.status_code in (200, 201), tool.text
    assert tool.json()["version"] == "3" and tool.json()["spec"]["version"] == "3"
    workflow = http.post(
        "/v1/workflows", json={**dag("numbered-flow", [{"name": "a", "tool": "numbered@3"}]), "version": 2}
    )
    assert workflow.status_code in (200, 201), workflow.text
    assert workflow.json()["version"] == "2" and workflow.json()["spec"]["version"] == "2"
    for route, document in (("/v1/tools", tool_spec("decimal")), ("/v1/workflows", dag("decimal-flow", []))):
        body = assert_problem(http.post(route, json={**document, "version": 1.1}), 422, "bad-version", "version")
        assert 'version: "1.1"' in body["detail"], body


# --- versions are immutable -------------------------------------------------------------------------


def test_registering_a_version_again_with_other_content_is_a_duplicate_version(http: httpx.Client) -> None:
    first = http.post("/v1/tools", json=tool_spec("immutable-tool", description="first"))
    assert first.status_code == 201, first.text
    again = http.post("/v1/tools", json=tool_spec("immutable-tool", description="first"))
    assert again.status_code == 200, again.text
    other = http.post("/v1/tools", json=tool_spec("immutable-tool", description="second"))
    body = assert_problem(other, 409, "duplicate-version", "version")
    assert "immutable-tool@1.0.0" in body["detail"]


def test_applying_a_workflow_version_again_with_other_content_is_a_duplicate_version(http: httpx.Client) -> None:
    first = http.post("/v1/workflows", json=dag("immutable-flow", [{"name": "a", "tool": "noop"}]))
    assert first.status_code == 201, first.text
    other = http.post("/v1/workflows", json=dag("immutable-flow", [{"name": "b", "tool": "noop"}]))
    assert_problem(other, 409, "duplicate-version", "version")


# --- workflows --------------------------------------------------------------------------------------


def test_a_run_of_an_unknown_workflow_is_unknown_workflow(http: httpx.Client) -> None:
    response = http.post("/v1/runs", json={"workflow": "no-such-flow", "input": {}})
    assert_problem(response, 422, "unknown-workflow", "workflow")
    response = http.post("/v1/runs", json={"workflow": "doc-review@9.9.9", "input": {"text": "x"}})
    assert_problem(response, 422, "unknown-workflow", "workflow")


def test_a_workflow_whose_needs_form_a_cycle_is_invalid_with_every_problem_listed(http: httpx.Client) -> None:
    document = dag(
        "cyclic",
        [
            {"name": "a", "tool": "noop", "needs": ["b"]},
            {"name": "b", "tool": "noop", "needs": ["a"]},
        ],
    )
    body = assert_problem(http.post("/v1/workflows", json=document), 422, "invalid-workflow", "steps[0].needs")
    assert [p["field"] for p in body["problems"]] == ["steps[0].needs"]
    assert "cycle" in body["problems"][0]["detail"]


def test_a_workflow_needing_an_unknown_step_is_invalid_on_that_need(http: httpx.Client) -> None:
    document = dag(
        "needs-ghost", [{"name": "a", "tool": "noop"}, {"name": "b", "tool": "noop", "needs": ["a", "ghost"]}]
    )
    body = assert_problem(http.post("/v1/workflows", json=document), 422, "invalid-workflow", "steps[1].needs[1]")
    assert body["problems"][0]["field"] == "steps[1].needs[1]"
    assert "ghost" in body["problems"][0]["detail"]


def test_a_step_reading_the_output_of_a_step_it_does_not_need_is_invalid(http: httpx.Client) -> None:
    document = dag(
        "reads-sibling",
        [
            {"name": "a", "tool": "noop"},
            {"name": "b", "tool": "noop", "input": {"from_a": "$.steps.a.output"}},
        ],
    )
    body = assert_problem(http.post("/v1/workflows", json=document), 422, "invalid-workflow", "steps[1].input.from_a")
    assert len(body["problems"]) == 1


def test_a_workflow_with_several_problems_lists_them_all(http: httpx.Client) -> None:
    document = dag(
        "many-problems",
        [
            {"name": "a", "tool": "noop", "needs": ["ghost"]},
            {"name": "a", "tool": "noop", "colour": "blue"},
        ],
    )
    response = http.post("/v1/workflows", json=document)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"] == PROBLEM + "invalid-workflow"
    fields = [p["field"] for p in body["problems"]]
    assert set(fields) == {"steps[0].needs[0]", "steps[1].colour", "steps[1].name"}, body
    assert body["field"] == fields[0]
    assert all(p["detail"] for p in body["problems"])


def test_a_workflow_step_naming_an_unknown_tool_is_unknown_tool_on_that_step(http: httpx.Client) -> None:
    document = dag("ghost-tool", [{"name": "a", "tool": "noop"}, {"name": "b", "tool": "ghost-tool@1.0.0"}])
    assert_problem(http.post("/v1/workflows", json=document), 422, "unknown-tool", "steps[1].tool")


def test_every_unknown_tool_of_a_workflow_is_reported_in_one_answer(http: httpx.Client) -> None:
    document = dag("ghost-tools", [{"name": "a", "tool": "ghost-one"}, {"name": "b", "tool": "ghost-two@2.0.0"}])
    body = assert_problem(http.post("/v1/workflows", json=document), 422, "unknown-tool", "steps[0].tool")
    assert [(p["field"], p["type"]) for p in body["problems"]] == [
        ("steps[0].tool", "unknown-tool"),
        ("steps[1].tool", "unknown-tool"),
    ]


def test_a_cycle_an_unknown_tool_and_a_bad_version_are_reported_together(http: httpx.Client) -> None:
    document = dag(
        "cycle-and-ghost",
        [{"name": "a", "tool": "noop", "needs": ["b"]}, {"name": "b", "tool": "ghost-tool", "needs": ["a"]}],
        version="one",
    )
    body = assert_problem(http.post("/v1/workflows", json=document), 422, "invalid-workflow", "version")
    found = {(p["field"], p["type"]) for p in body["problems"]}
    assert found == {
        ("version", "bad-version"),
        ("steps[0].needs", "invalid-workflow"),
        ("steps[1].tool", "unknown-tool"),
    }, body


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-key", "Bearer af_000000000000_wrongsecret"],
    ids=["missing", "basic", "bearer-without-key", "malformed-key", "unknown-key"],
)
def test_a_missing_or_invalid_api_key_is_unauthorized(stack: Stack, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as anonymous:
        for method, path in [("GET", "/v1/runs"), ("POST", "/v1/runs"), ("GET", "/v1/tools"), ("GET", "/v1/workers")]:
            response = anonymous.request(method, path, json={"tool": "noop"} if method == "POST" else None)
            assert_problem(response, 401, "unauthorized", "Authorization")


def test_the_right_key_with_another_secret_is_unauthorized(stack: Stack) -> None:
    prefix = stack.token.split("_")[1]
    headers = {"Authorization": f"Bearer af_{prefix}_not-the-secret"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as impostor:
        assert_problem(impostor.get("/v1/runs"), 401, "unauthorized", "Authorization")


# --- runs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_id", [NOT_A_RUN, "not-a-uuid", "1"], ids=["unknown-uuid", "not-a-uuid", "number"])
def test_an_unknown_or_malformed_run_id_is_not_found(http: httpx.Client, run_id: str) -> None:
    assert_problem(http.get(f"/v1/runs/{run_id}"), 404, "not-found", "id")
    assert_problem(http.post(f"/v1/runs/{run_id}/cancel"), 404, "not-found", "id")
    assert_problem(http.get(f"/v1/runs/{run_id}/events"), 404, "not-found", "id")


def test_an_unknown_route_is_not_found_as_a_problem(http: httpx.Client) -> None:
    response = http.get("/v1/no-such-route")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == PROBLEM + "not-found"


def test_an_unknown_tool_version_is_not_found(http: httpx.Client) -> None:
    assert_problem(http.get("/v1/tools/text-stats/versions/9.9.9"), 404, "not-found", "name")
    assert_problem(http.get("/v1/tools/text-stats/versions/nine"), 422, "bad-version", "version")
    assert_problem(http.get("/v1/workflows/no-such-flow/versions/latest"), 404, "not-found", "name")


@pytest.mark.parametrize("state", ["done", "SUCCEEDED", ""], ids=["unknown", "uppercase", "empty"])
def test_an_invalid_state_filter_is_a_validation_error(http: httpx.Client, state: str) -> None:
    assert_problem(http.get("/v1/runs", params={"state": state}), 422, "validation-error", "state")


def test_an_invalid_cursor_or_limit_is_a_validation_error(http: httpx.Client) -> None:
    assert_problem(http.get("/v1/runs", params={"cursor": "nope"}), 422, "validation-error", "cursor")
    response = http.get("/v1/runs", params={"limit": 0})
    assert response.status_code == 422, response.text
    assert response.json()["type"] == PROBLEM + "validation-error"


def test_an_idempotency_key_reused_with_another_body_is_a_conflict(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "problems-idem-1"}
    first = http.post("/v1/runs", json={"tool": "noop", "input": {"n": 1}}, headers=headers)
    assert first.status_code == 201, first.text
    same = http.post("/v1/runs", json={"tool": "noop", "input": {"n": 1}}, headers=headers)
    assert same.status_code == 200 and same.json()["id"] == first.json()["id"], same.text
    other = http.post("/v1/runs", json={"tool": "noop", "input": {"n": 2}}, headers=headers)
    body = assert_problem(other, 409, "idempotency-conflict", "Idempotency-Key")
    assert first.json()["id"] in body["detail"]


def test_an_idempotency_key_in_the_header_and_another_in_the_body_is_a_validation_error(http: httpx.Client) -> None:
    body = {"tool": "noop", "input": {}, "idempotency_key": "problems-idem-body"}
    both = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "problems-idem-header"})
    problem = assert_problem(both, 422, "validation-error", "idempotency_key")
    assert "problems-idem-header" in problem["detail"] and "problems-idem-body" in problem["detail"]
    # The same key in both is one key.
    same = http.post("/v1/runs", json=body, headers={"Idempotency-Key": "problems-idem-body"})
    assert same.status_code == 201, same.text


def test_cancelling_a_finished_run_is_run_finished(http: httpx.Client) -> None:
    run_id = http.post("/v1/runs", json={"tool": "noop", "input": {}}).json()["id"]
    with http.stream("GET", f"/v1/runs/{run_id}/events") as events:
        for _ in events.iter_lines():
            pass  # the stream ends after the run's final event
    assert http.get(f"/v1/runs/{run_id}").json()["state"] == "succeeded"
    assert_problem(http.post(f"/v1/runs/{run_id}/cancel"), 409, "run-finished", "id")


# --- documents for operators ------------------------------------------------------------------------


def test_the_openapi_document_names_the_v1_routes(stack: Stack) -> None:
    response = httpx.get(f"{stack.api_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    paths = ("/v1/tools", "/v1/workflows", "/v1/runs", "/v1/runs:batch", "/v1/runs/{run_id}", "/v1/workers")
    for path in (*paths, "/v1/auth/revoke"):
        assert path in document["paths"], sorted(document["paths"])
    # A route that declares its problems documents each status with the problem document and its types.
    revoke = document["paths"]["/v1/auth/revoke"]["post"]["responses"]
    assert {"200", "400", "422", "429"} <= set(revoke), revoke
    refused = revoke["429"]
    assert refused["content"]["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/ProblemBody"}
    assert "urn:agentflow:problem:rate-limited" in refused["description"]
    assert set(document["components"]["schemas"]["ProblemBody"]["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "field",
        "problems",
    }


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_and_readiness_answer_200_without_a_key(stack: Stack, path: str) -> None:
    response = httpx.get(f"{stack.api_url}{path}", timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")


def test_readiness_reports_nats_and_postgres(stack: Stack) -> None:
    body = httpx.get(f"{stack.api_url}/readyz", timeout=30).json()
    assert body["status"] == "ready"
    assert set(body["checks"].values()) == {"ok"}
    assert len(body["checks"]) >= 2, body


def test_metrics_are_prometheus_text(stack: Stack, http: httpx.Client) -> None:
    http.post("/v1/runs", json={"tool": "noop", "input": {}})
    response = httpx.get(f"{stack.api_url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "version=" in response.headers["content-type"]
    text = response.text
    assert "# TYPE agentflow_runs_submitted_total counter" in text
    assert 'agentflow_runs_submitted_total{kind="tool",tenant="default"}' in text


# --- back-pressure settings -------------------------------------------------------------------------


def test_a_queue_limit_on_a_queue_name_with_a_dot_is_an_invalid_name(http: httpx.Client) -> None:
    assert_problem(http.put("/v1/queues/a.b", json={"max_in_flight": 1}), 422, "invalid-name", "queue")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_in_flight": "many"}, "max_in_flight"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"surprise": 1}, "surprise"),
    ],
    ids=["zero-limit", "string-limit", "priority-too-high", "negative-priority", "unknown-field"],
)
def test_a_queue_setting_out_of_range_is_a_validation_error_on_its_field(
    http: httpx.Client, body: dict[str, object], field: str
) -> None:
    assert_problem(http.put("/v1/queues/checked", json=body), 422, "validation-error", field)


def test_a_tenant_limit_of_zero_is_a_validation_error(http: httpx.Client) -> None:
    assert_problem(http.put("/v1/limits", json={"max_in_flight": 0}), 422, "validation-error", "max_in_flight")


@pytest.mark.parametrize("warm", [-1, 33, "two"], ids=["negative", "too-many", "string"])
def test_a_warm_pool_size_out_of_range_is_a_validation_error_on_its_field(http: httpx.Client, warm: object) -> None:
    spec = tool_spec("warm-checked", runtime={"command": ["python3", "-c", "print('{}')"], "warm": warm})
    assert_problem(http.post("/v1/tools", json=spec), 422, "validation-error", "runtime.warm")


@pytest.mark.parametrize("field", ["prestart", "reuse"])
@pytest.mark.parametrize("value", ["no", 1, None], ids=["string", "number", "null"])
def test_a_sandbox_switch_that_is_not_a_boolean_is_a_validation_error_on_its_field(
    http: httpx.Client, field: str, value: object
) -> None:
    spec = tool_spec("switch-checked", runtime={"command": ["python3", "-c", "print('{}')"], field: value})
    assert_problem(http.post("/v1/tools", json=spec), 422, "validation-error", f"runtime.{field}")
