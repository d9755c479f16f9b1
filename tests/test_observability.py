"""Metrics, traces and logs of the real processes: Prometheus text from the control plane's and a worker's
``/metrics``, spans received by an OTLP/HTTP collector running in the test, JSON log lines from the log files."""

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from agentflow import Client
from prometheus_client.parser import text_string_to_metric_families

from bus import logs, subjects
from bus.config import SettingsError
from control_plane.stack.processes import stop
from tests.conftest import ROOT, Collector, Span, Stack, isolated_stack
from worker.settings import load as load_worker_settings

ECHO_TRACEPARENT = """\
import json, os, sys
print("looking at the trace context", file=sys.stderr)
print(json.dumps({"traceparent": os.environ.get("TRACEPARENT")}))
"""
ECHO_TOOL = {
    "name": "echo-traceparent",
    "version": "1.0.0",
    "runtime": {"command": ["python3", "main.py"], "files": {"main.py": ECHO_TRACEPARENT}},
}


Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, by sample name (``..._total``, ``..._bucket``, ...)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(value for found, value in samples.get(name, []) if labels.items() <= found.items())


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
    return value


def worker_metrics_url(client: Client) -> str:
    """The /metrics of the stack's worker of queue default."""
    ports = [w["metrics_port"] for w in client.list_workers() if w["queues"] == ["default"]]
    assert ports and ports[0], client.list_workers()
    return f"http://127.0.0.1:{ports[0]}/metrics"


def metrics_url_of(client: Client, pid: int) -> str | None:
    """The /metrics of the worker with this PID, once its heartbeat announced it."""
    port = next((w["metrics_port"] for w in client.list_workers() if w["pid"] == pid), None)
    return f"http://127.0.0.1:{port}/metrics" if port else None


# --- metrics ----------------------------------------------------------------------------------------


def test_a_finished_run_is_counted_on_the_control_plane_and_on_the_worker(stack: Stack, client: Client) -> None:
    client.register_tool(ECHO_TOOL)
    run = client.wait_run(client.start_run(tool="echo-traceparent", input={})["id"], timeout=60)
    assert run["state"] == "succeeded", run

    control = wait_for(
        "the run to be counted",
        lambda: (
            (s := scrape(f"{stack.api_url}/metrics"))
            and total(s, "agentflow_runs_total", kind="tool", state="succeeded")
            and s
        ),
    )
    assert total(control, "agentflow_tasks_total", tool="echo-traceparent", state="succeeded", queue="default") >= 1
    assert total(control, "agentflow_task_round_trip_seconds_count", tenant="default", queue="default") >= 1
    assert total(control, "agentflow_plan_step_seconds_count", kind="tool") >= 1
    assert total(control, "agentflow_http_requests_total", method="POST", route="/v1/runs", status="201") >= 1
    # Route templates, never raw paths: no run id ever becomes a label.
    routes = {labels["route"] for labels, _ in control["agentflow_http_requests_total"]}
    assert "/v1/runs/{run_id}" in routes
    assert not any(run["id"] in route for route in routes)

    worker = scrape(worker_metrics_url(client))
    assert total(worker, "agentflow_worker_tasks_total", tool="echo-traceparent@1.0.0", outcome="ok") >= 1
    assert total(worker, "agentflow_task_execution_seconds_count", queue="default") >= 1
    assert total(worker, "agentflow_task_queue_wait_seconds_count", queue="default") >= 1
    assert total(worker, "agentflow_sandbox_starts_total", start="cold") >= 1
    assert "agentflow_worker_in_flight_tasks" in worker
    assert total(worker, "agentflow_worker_concurrency") == 8


def test_a_call_served_by_a_warm_sandbox_counts_as_a_warm_start(stack: Stack, client: Client) -> None:
    process = stack.start_worker(queue="warm-pool", AF_RUNSC_WARM="1")
    try:
        client.register_tool(ECHO_TOOL)
        url = wait_for("the worker's heartbeat", lambda: metrics_url_of(client, process.pid))

        def warm_starts() -> float:
            run = client.start_run(tool="echo-traceparent", input={}, queue="warm-pool")
            assert client.wait_run(run["id"], timeout=60)["state"] == "succeeded"
            return total(scrape(url), "agentflow_sandbox_starts_total", backend="runsc", start="warm")

        assert wait_for("a call to find a warm sandbox ready", warm_starts) >= 1
        assert total(scrape(url), "agentflow_sandbox_starts_total", backend="runsc", start="cold") >= 1
    finally:
        stop(process.pid)


def test_consumer_backlogs_and_the_fleet_are_sampled_by_the_control_plane(stack: Stack, client: Client) -> None:
    def sampled() -> Samples | None:
        samples = scrape(f"{stack.api_url}/metrics")
        consumers = {labels["consumer"] for labels, _ in samples.get("agentflow_consumer_pending_messages", [])}
        wanted = {subjects.task_consumer("default", "default"), subjects.RESULTS_CONSUMER}
        return samples if wanted <= consumers else None

    control = wait_for("the task and result consumers to be sampled", sampled)
    assert "agentflow_consumer_redelivered_messages" in control
    assert total(control, "agentflow_workers", tenant="default", queue="default") >= 1
    assert total(control, "agentflow_workers_capacity_tasks", tenant="default", queue="default") >= 8


def test_the_worker_serves_its_metrics_on_the_port_it_announces(stack: Stack, client: Client) -> None:
    worker = next(w for w in client.list_workers() if w["queues"] == ["default"])
    log = (stack.root / "logs" / f"{worker['id']}.log").read_text()
    assert f"metrics on http://127.0.0.1:{worker['metrics_port']}/metrics" in log


# --- dashboard and alerts ---------------------------------------------------------------------------

DEPLOY = ROOT / "deploy"
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}


def exported_names(url: str) -> set[str]:
    """Every series name a /metrics page can hold, families without samples yet included."""
    names = set()
    for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ()))
    return names


def referenced_names(text: str) -> set[str]:
    return set(re.findall(r"\bagentflow_[a-z0-9_]+\b", text))


def test_every_metric_the_dashboard_and_the_alerts_use_is_exported(stack: Stack, client: Client) -> None:
    assert client.wait_run(client.start_run(tool="noop", input={})["id"], timeout=60)["state"] == "succeeded"
    exported = exported_names(f"{stack.api_url}/metrics") | exported_names(worker_metrics_url(client))

    dashboard = json.loads((DEPLOY / "grafana" / "agentflow.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs.append(dashboard["templating"]["list"][1]["query"]["query"])
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    assert all({"alert", "expr", "for", "labels", "annotations"} <= rule.keys() for rule in rules)

    used = referenced_names("\n".join(exprs)) | referenced_names("\n".join(rule["expr"] for rule in rules))
    assert len(used) > 15
    assert {"agentflow_llm_calls_total", "agentflow_llm_budget_refusals_total"} <= used, "the models row and its alert"
    assert used <= exported, sorted(used - exported)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


# --- logs -------------------------------------------------------------------------------------------


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_log_lines_are_json_with_the_task_they_are_about(stack: Stack, client: Client) -> None:
    client.register_tool(
        {"name": "fails-loudly", "version": "1.0.0", "runtime": {"command": ["python3", "-c", "raise SystemExit(3)"]}}
    )
    run = client.wait_run(client.start_run(tool="fails-loudly", input={})["id"], timeout=60)
    task_id = run["tasks"][0]["id"]
    logs = stack.root / "logs"

    def failure_line() -> dict[str, Any] | None:
        lines = [line for path in logs.glob("test-*.log") for line in json_lines(path)]
        return next((line for line in lines if line["task_id"] == task_id), None)

    line = wait_for("the worker's line about the failed task", failure_line)
    assert line["level"] == "info"
    assert line["component"] == "worker"
    assert line["tenant"] == "default"
    assert line["run_id"] == run["id"]
    assert len(line["trace_id"]) == 32
    assert "failed" in line["message"]
    time.strptime(line["time"][:19], "%Y-%m-%dT%H:%M:%S")

    # The session stack's own control plane (tests start others, with logs of their own).
    port = stack.api_url.rsplit(":", 1)[1]
    control_plane = json_lines(logs / f"control-plane-{port}.log")
    assert control_plane, "the control plane writes JSON lines off a terminal"
    assert {"time", "level", "component", "tenant", "run_id", "task_id", "trace_id"} <= control_plane[0].keys()
    assert control_plane[0]["component"] == "control-plane"


def test_a_log_line_in_a_task_scope_names_the_task_and_its_trace() -> None:
    record = logging.LogRecord("worker.execute", logging.INFO, __file__, 1, "task %s failed", ("t-1",), None)
    formatter = logs.JsonFormatter("worker", {"worker_id": "w-1"})
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    token = logs.scope.set(logs.Scope("acme", "r-1", "t-1", traceparent))
    try:
        line = json.loads(formatter.format(record))
    finally:
        logs.scope.reset(token)
    assert line["message"] == "task t-1 failed"
    assert (line["component"], line["worker_id"], line["level"]) == ("worker", "w-1", "info")
    assert (line["tenant"], line["run_id"], line["task_id"]) == ("acme", "r-1", "t-1")
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_an_unknown_log_format_or_a_bad_metrics_port_stops_the_worker_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="AF_LOG_FORMAT"):
        load_worker_settings(env={"AF_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="AF_METRICS_PORT"):
        load_worker_settings(env={"AF_METRICS_PORT": "70000"})


# --- traces -----------------------------------------------------------------------------------------


def test_one_trace_follows_a_run_step_from_the_api_through_the_worker_and_back(
    tmp_root: Path, collector: Collector
) -> None:
    env = {"AF_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with isolated_stack(tmp_root, **env) as traced:
        traced.start_worker()
        with traced.client() as af:
            af.register_tool(ECHO_TOOL)
            run = af.wait_run(af.start_run(tool="echo-traceparent", input={})["id"], timeout=60)
        assert run["state"] == "succeeded", run

        def step_spans() -> dict[str, Span] | None:
            by_name = {s.name.split(" ")[0]: s for s in collector.spans if s.name != "POST /v1/tools"}
            wanted = {"POST", "plan", "publish", "consume", "sandbox", "apply"}
            return by_name if wanted <= by_name.keys() else None

        spans = wait_for("the spans of the run's step", step_spans)

    api, plan, publish = spans["POST"], spans["plan"], spans["publish"]
    consume, sandbox, apply = spans["consume"], spans["sandbox"], spans["apply"]
    assert api.name == "POST /v1/runs"
    assert {s.trace_id for s in (api, plan, publish, consume, sandbox, apply)} == {api.trace_id}
    assert api.parent_id == ""
    assert plan.parent_id == api.span_id
    assert publish.parent_id == plan.span_id
    assert consume.parent_id == publish.span_id
    assert sandbox.parent_id == consume.span_id
    assert apply.parent_id == consume.span_id
    assert {api.service, plan.service, publish.service, apply.service} == {"agentflow-control-plane"}
    assert {consume.service, sandbox.service} == {"agentflow-worker-default"}
    # The tool itself was handed the sandbox span's context.
    assert run["output"]["traceparent"].startswith(f"00-{api.trace_id}-{sandbox.span_id}-")
