"""The deploy kit, checked offline: the Helm chart linted and rendered by Helm v4 (the helm-python-sdk wheel),
what it renders validated by kubernetes-validate --strict and read object by object; the Compose file and the
release workflow validated by check-jsonschema against the schemas it ships."""

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from control_plane.settings import Settings as ControlPlaneSettings
from control_plane.stack import nats_identity
from control_plane.stack.processes import free_port, http_ok, spawn, stop, wait_until
from sandbox import SandboxSettings
from tests.conftest import Stack, nats_identities
from worker.settings import Settings as WorkerSettings

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "agentflow"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
BIN = Path(sys.executable).parent
# Kinds of CRDs (Prometheus Operator's, KEDA's): kubernetes-validate has no schema for them, so their shape is
# checked by the tests below instead.
CUSTOM_KINDS = {"ServiceMonitor", "ScaledObject"}

Object = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Object]:
    manifests = helm.Chart.load(CHART).render(values or {}, name="af", namespace="agentflow")
    return [
        doc for path, text in manifests.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text) if doc
    ]


def kinds(objects: list[Object], kind: str) -> list[Object]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[Object], component: str) -> list[Object]:
    """The pod templates of the Deployments whose component label starts with ``component``."""
    return [
        d["spec"]["template"]["spec"]
        for d in kinds(objects, "Deployment")
        if d["metadata"]["labels"]["app.kubernetes.io/component"].startswith(component)
    ]


def env_of(pod: Object) -> dict[str, Object]:
    return {e["name"]: e for e in pod["containers"][0]["env"]}


@pytest.fixture(scope="module", params=CI_VALUES, ids=[p.stem for p in CI_VALUES])
def value_set(request: pytest.FixtureRequest) -> Iterator[tuple[dict[str, Any], list[Object]]]:
    values = yaml.safe_load(request.param.read_text()) or {}
    yield values, render(values)


def test_the_chart_has_value_sets_for_ci() -> None:
    assert {p.stem for p in CI_VALUES} >= {"default-values", "single-replica-values", "autoscaling-values"}


@pytest.mark.parametrize("path", CI_VALUES, ids=[p.stem for p in CI_VALUES])
def test_every_value_set_lints_clean_in_strict_mode(path: Path) -> None:
    report = helm.lint(CHART, yaml.safe_load(path.read_text()) or {}, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []  # 2: warning, 3: error


def test_what_each_value_set_renders_passes_kubernetes_validate_strict(
    value_set: tuple[dict[str, Any], list[Object]], tmp_path: Path
) -> None:
    _, objects = value_set
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    done = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", manifest], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for o in objects:
        ref = f"{o['kind'].lower()}/{o['metadata']['name']}"
        if o["kind"] in CUSTOM_KINDS:
            assert f"Couldn't find schema for kind {o['kind']}" in done.stdout
        else:
            assert f"passed for resource {ref}" in done.stdout, done.stdout


@pytest.mark.parametrize(
    ("control_plane", "pdb"),
    [
        ({"replicas": 1}, False),
        ({"replicas": 2}, True),
        ({"replicas": 3}, True),
        ({"replicas": 1, "autoscaling": {"enabled": True, "minReplicas": 3}}, True),
        ({"replicas": 3, "autoscaling": {"enabled": True, "minReplicas": 1}}, False),
    ],
)
def test_a_disruption_budget_exactly_when_more_than_one_control_plane(control_plane: dict[str, Any], pdb: bool) -> None:
    budgets = kinds(render({"controlPlane": control_plane}), "PodDisruptionBudget")
    assert len(budgets) == (1 if pdb else 0)


def test_every_worker_pod_and_no_control_plane_pod_runs_in_the_gvisor_runtime_class(
    value_set: tuple[dict[str, Any], list[Object]],
) -> None:
    values, objects = value_set
    name = values.get("runtimeClass", {}).get("name", "gvisor")
    workers = pod_specs(objects, "worker-")
    assert len(workers) == len(values.get("workers", [{}]))
    assert all(pod["runtimeClassName"] == name for pod in workers)
    assert [pod for pod in pod_specs(objects, "control-plane") if "runtimeClassName" in pod] == []
    created = kinds(objects, "RuntimeClass")
    if values.get("runtimeClass", {}).get("create", True):
        assert [(r["metadata"]["name"], r["handler"]) for r in created] == [(name, "runsc")]
    else:
        assert created == []


@pytest.mark.parametrize(
    ("values", "offending"),
    [
        ({"workers": [{"name": "x"}]}, "missing property 'queue'"),
        ({"workers": [{"name": "x", "queue": "Not_A_Name"}]}, "/workers/0/queue"),
        ({"controlPlane": {"replicas": 0}}, "/controlPlane/replicas"),
        ({"controlPlan": {"replicas": 2}}, "'controlPlan' not allowed"),
        ({"workerDefaults": {"sandbox": "none"}}, "/workerDefaults/sandbox"),
    ],
)
def test_the_chart_refuses_bad_values_naming_the_value(values: dict[str, Any], offending: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=offending):
        render(values)


def test_no_autoscaler_while_autoscaling_is_off() -> None:
    objects = render()
    assert kinds(objects, "HorizontalPodAutoscaler") == []
    assert kinds(objects, "ScaledObject") == []
    assert all("replicas" in d["spec"] for d in kinds(objects, "Deployment"))


def test_autoscaling_on_cpu_leaves_the_replica_count_to_the_autoscaler() -> None:
    objects = render(
        {"controlPlane": {"autoscaling": {"enabled": True}}, "workerDefaults": {"autoscaling": {"enabled": True}}}
    )
    scalers = kinds(objects, "HorizontalPodAutoscaler")
    assert sorted(s["spec"]["scaleTargetRef"]["name"] for s in scalers) == sorted(
        d["metadata"]["name"] for d in kinds(objects, "Deployment")
    )
    assert all(s["spec"]["metrics"][0]["resource"]["name"] == "cpu" for s in scalers)
    assert all("replicas" not in d["spec"] for d in kinds(objects, "Deployment"))


def test_keda_scales_a_queue_on_its_durable_consumer_instead_of_an_hpa() -> None:
    objects = render(
        {"workerDefaults": {"keda": {"enabled": True}}, "workers": [{"name": "b", "queue": "batch", "tenant": "acme"}]}
    )
    assert kinds(objects, "HorizontalPodAutoscaler") == []
    (scaled,) = kinds(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "af-agentflow-worker-b"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "nats-jetstream"
    assert (trigger["metadata"]["stream"], trigger["metadata"]["consumer"]) == ("AF_TASKS", "tasks_acme_batch")


def test_a_worker_pod_is_given_its_drain_time_and_a_margin_before_it_is_killed() -> None:
    objects = render({"workers": [{"name": "slow", "queue": "slow", "drainSeconds": 120}, {"name": "d", "queue": "d"}]})
    pods = {p["containers"][0]["env"][1]["value"]: p for p in pod_specs(objects, "worker-")}
    for queue, drain in [("slow", 120), ("d", 30)]:
        assert env_of(pods[queue])["AF_DRAIN_SECONDS"]["value"] == str(drain)
        assert pods[queue]["terminationGracePeriodSeconds"] == drain + 15


def test_probes_use_the_control_planes_health_routes_on_af_port() -> None:
    (pod,) = pod_specs(render({"controlPlane": {"port": 9090}}), "control-plane")
    container = pod["containers"][0]
    assert container["ports"][0]["containerPort"] == 9090
    assert env_of(pod)["AF_PORT"]["value"] == "9090"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_credentials_come_from_secrets_never_from_values() -> None:
    objects = render({"nats": {"auth": {"enabled": True}}})
    (cp,) = pod_specs(objects, "control-plane")
    assert kinds(objects, "Secret") == []
    for name, secret in [
        ("AF_DATABASE_URL", "agentflow-database"),
        ("AF_MASTER_KEY", "agentflow-master-key"),
        ("AF_NATS_PASSWORD", "agentflow-nats"),
    ]:
        assert env_of(cp)[name]["valueFrom"]["secretKeyRef"]["name"] == secret
    for worker in pod_specs(objects, "worker-"):
        env = env_of(worker)
        assert env["AF_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "worker-password"
        assert "AF_MASTER_KEY" not in env and "AF_DATABASE_URL" not in env


def _setting_names(kind: type) -> set[str]:
    names = set()
    for f in dataclasses.fields(kind):
        if dataclasses.is_dataclass(f.type) or f.name in {"sandbox", "gateway"}:
            continue
        names.add(f"AF_{f.name.upper()}")
    return names


def test_every_af_variable_the_chart_sets_is_one_the_processes_read(
    value_set: tuple[dict[str, Any], list[Object]],
) -> None:
    sandbox = {f"AF_{f.metadata.get('setting', f.name).upper()}" for f in dataclasses.fields(SandboxSettings)}
    known = {
        "control-plane": _setting_names(ControlPlaneSettings) | {"AF_HOME"},  # AF_HOME: where the key file would go
        "worker-": _setting_names(WorkerSettings) | sandbox,
    }
    _, objects = value_set
    for component, names in known.items():
        for pod in pod_specs(objects, component):
            assert set(env_of(pod)) - names == set()


def test_workers_reach_only_nats_the_control_plane_and_dns() -> None:
    policy = next(p for p in kinds(render(), "NetworkPolicy") if p["metadata"]["name"].endswith("-workers"))
    assert policy["spec"]["podSelector"]["matchLabels"]["agentflow.dev/role"] == "worker"
    assert policy["spec"]["ingress"] == []
    ports = sorted(port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"])
    assert ports == [53, 53, 4222, 8080]
    assert all("ipBlock" not in peer for rule in policy["spec"]["egress"] for peer in rule["to"])


def test_the_service_monitor_scrapes_the_control_planes_metrics() -> None:
    (monitor,) = kinds(render({"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}), "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "control-plane"
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]


def test_every_value_is_documented_in_the_charts_readme() -> None:
    readme = (CHART / "README.md").read_text()

    def leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[str]:
        for key, value in tree.items():
            if (
                isinstance(value, dict)
                and value
                and key not in {"resources", "livenessProbe", "readinessProbe", "podSelector", "securityContext"}
            ):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert [name for name in leaves(values) if f"`{name}`" not in readme] == []


def pod_environment(pod: Object, secrets: dict[str, dict[str, str]], pod_name: str) -> dict[str, str]:
    """The environment the kubelet would give ``pod``'s container, its Secrets read from ``secrets``."""
    env = {}
    for entry in pod["containers"][0]["env"]:
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[entry["name"]] = secrets[source["secretKeyRef"]["name"]][source["secretKeyRef"]["key"]]
        elif "fieldRef" in source:
            assert source["fieldRef"]["fieldPath"] == "metadata.name"
            env[entry["name"]] = pod_name
        else:
            env[entry["name"]] = entry["value"]
    return env


def test_every_alert_rule_says_in_the_operations_guide_what_to_do_when_it_fires() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    rows = [line for line in guide.splitlines() if line.startswith("| `AgentFlow")]
    assert sorted(row.split("`")[1] for row in rows) == sorted(rule["alert"] for rule in rules)


def test_the_processes_start_and_serve_from_the_environment_the_chart_gives_their_pods(
    stack: Stack, tmp_path: Path
) -> None:
    objects = render(
        {"nats": {"url": stack.nats_served_by.url if stack.nats_served_by else "", "auth": {"enabled": True}}}
        | {"workers": [{"name": "chart", "queue": "chart", "drainSeconds": 5}]}
    )
    (control_plane,) = pod_specs(objects, "control-plane")
    (worker,) = pod_specs(objects, "worker-")
    identities = nats_identities(stack.root)
    worker_identity = stack.grant_worker("default", "chart")
    secrets = {
        "agentflow-database": {"database-url": stack.database_url},
        "agentflow-master-key": {"master-key": stack.master_key_file.read_text().strip()},
        "agentflow-nats": {
            "control-plane-user": nats_identity.CONTROL_PLANE,
            "control-plane-password": identities.env(nats_identity.CONTROL_PLANE)["AF_NATS_PASSWORD"],
            "worker-user": worker_identity["AF_NATS_USER"],
            "worker-password": worker_identity["AF_NATS_PASSWORD"],
        },
    }
    base = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    port = free_port()
    # Servers here listen on loopback only, and AF_HOME is the pod's emptyDir: the rest is the chart's.
    cp_env = pod_environment(control_plane, secrets, "cp-0") | {"AF_HOST": "127.0.0.1", "AF_PORT": str(port)}
    cp_env["AF_HOME"] = str(tmp_path / "home")
    log = tmp_path / "control-plane.log"
    process = spawn("control plane", [sys.executable, "-m", "control_plane", "start"], log, env=base | cp_env)
    try:
        wait_until(
            "control plane", lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=60, process=process, log=log
        )
        assert http_ok(f"http://127.0.0.1:{port}/healthz")
    finally:
        stop(process.pid, timeout=15)
        process.wait()

    worker_log = tmp_path / "worker.log"
    worker_env = pod_environment(worker, secrets, "af-agentflow-worker-chart-0")
    pulling = spawn("worker", [sys.executable, "-m", "worker", "start"], worker_log, env=base | worker_env)
    try:
        wait_until(
            "worker",
            lambda: "pulling" in worker_log.read_text(errors="replace"),
            timeout=30,
            process=pulling,
            log=worker_log,
        )
    finally:
        # What the kubelet does: SIGTERM, then SIGKILL once the pod's grace period is over.
        killed = stop(pulling.pid, timeout=worker["terminationGracePeriodSeconds"])
        pulling.wait()
    assert not killed
    assert pulling.returncode == 0, worker_log.read_text(errors="replace")


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", schema, path], capture_output=True, text=True, timeout=120
    )


def test_the_compose_file_follows_the_compose_specification() -> None:
    done = check_jsonschema("vendor.compose-spec", ROOT / "deploy" / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_file_runs_two_control_planes_and_runsc_workers() -> None:
    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    assert {"nats", "postgres", "prometheus", "grafana"} <= set(services)
    control_planes = [
        s for s in services.values() if s.get("command", [None])[0] == "start" and "control-plane" in s["image"]
    ]
    assert len(control_planes) == 2
    workers = [s for s in services.values() if "worker" in s.get("image", "")]
    assert workers and all(w["runtime"] == "runsc" for w in workers)
    assert "--jetstream" in services["nats"]["command"]


def test_the_release_workflow_follows_the_github_workflow_schema() -> None:
    done = check_jsonschema("vendor.github-workflows", ROOT / ".github" / "workflows" / "release.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_release_workflow_builds_both_images_multi_arch_with_an_sbom_and_signs_them() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yaml").read_text())
    job = workflow["jobs"]["images"]
    assert job["strategy"]["matrix"]["image"] == ["control-plane", "worker"]
    build = next(s for s in job["steps"] if s.get("uses", "").startswith("docker/build-push-action"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    assert build["with"]["sbom"] is True
    assert any("cosign sign" in s.get("run", "") for s in job["steps"])
    assert job["permissions"]["id-token"] == "write"


@pytest.mark.parametrize(
    "dockerfile",
    ["deploy/docker/Dockerfile.control-plane", "deploy/docker/Dockerfile.worker", ".devcontainer/Dockerfile"],
)
def test_each_dockerfile_passes_hadolint(dockerfile: str) -> None:
    config = ROOT / "deploy" / "docker" / "hadolint.yaml"
    done = subprocess.run(
        [BIN / "hadolint", "--no-color", "--config", config, ROOT / dockerfile],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", ["control-plane", "worker"])
def test_the_images_are_multi_stage_and_run_as_a_non_root_user(image: str) -> None:
    lines = (ROOT / "deploy" / "docker" / f"Dockerfile.{image}").read_text().splitlines()
    assert sum(line.startswith("FROM ") for line in lines) == 2
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER 10001:10001"]
    module = {"control-plane": "control_plane", "worker": "worker"}[image]
    assert f'ENTRYPOINT ["python", "-m", "{module}"]' in lines


def test_the_worker_image_carries_runsc() -> None:
    text = (ROOT / "deploy" / "docker" / "Dockerfile.worker").read_text()
    assert "install -y -qq --no-install-recommends runsc" in text


def test_the_devcontainer_builds_its_dockerfile_and_runs_make_install() -> None:
    spec = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    dockerfile = (ROOT / ".devcontainer" / spec["build"]["dockerfile"]).read_text()
    assert all(package in dockerfile for package in ["postgresql", "runsc", "gcc", "docker.io"])
    assert spec["postCreateCommand"] == "make install"
    assert 8080 in spec["forwardPorts"]
    assert "charliermarsh.ruff" in spec["customizations"]["vscode"]["extensions"]
