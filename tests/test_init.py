"""`af init` as a user runs it: the project it writes passes its own test, its tool registers and its workflow
runs on the real stack, its agent applies; a directory that is not empty is refused in one line."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Stack

from tests.test_cli_e2e import AF, one_error_line


@pytest.fixture
def af(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> "Af":
    return Af(stack, tmp_path_factory.mktemp("af-home"))


class Af:
    def __init__(self, stack: Stack, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
        self.env.update(AF_HOME=str(home), AF_API_URL=stack.api_url, AF_TOKEN=stack.token, NO_COLOR="1")

    def __call__(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(AF), *args], env=self.env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
        )


def test_the_default_project_passes_its_test_and_runs_on_the_stack(af: Af, stack: Stack, tmp_path: Path) -> None:
    project = tmp_path / "greetings"
    made = af("init", str(project))
    assert made.returncode == 0, made.stderr
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "README.md",
        "agents/greeter.yaml",
        "tests/test_greet.py",
        "tools/greet.py",
        "tools/greet.yaml",
        "workflows/hello.yaml",
    ]
    readme = (project / "README.md").read_text()
    assert readme.startswith("# greetings\n") and "af tool register tools/greet.yaml" in readme

    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr

    # The README's commands, from the project's directory.
    for command in (["tool", "register", "tools/greet.yaml"], ["workflow", "apply", "workflows/hello.yaml"]):
        done = af(*command, cwd=project)
        assert done.returncode == 0, done.stderr
    ran = af("run", "hello", "--input", '{"name": "Ada"}', "--wait", "--output", "json", cwd=project)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run = json.loads(ran.stdout)
    assert run["state"] == "succeeded" and run["output"] == {"greeting": "Hello, Ada!"}

    # The agent applies where a model serves tier1: a tenant of its own, so that its mock model stays there.
    tenant = f"init-{secrets.token_hex(4)}"
    created = httpx.post(
        f"{stack.api_url}/v1/tenants", json={"name": tenant}, headers={"Authorization": f"Bearer {stack.token}"}
    )
    assert created.status_code == 201, created.text
    af.env["AF_TOKEN"] = created.json()["admin_key"]["key"]
    (tmp_path / "mock.yaml").write_text("name: mock\nprovider: mock\ntier: tier1\n")
    for command in (
        ["model", "apply", str(tmp_path / "mock.yaml")],
        ["tool", "register", "tools/greet.yaml"],
        ["agent", "apply", "agents/greeter.yaml"],
    ):
        done = af(*command, cwd=project)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "agent greeter@1.0.0 created"


def test_the_tool_template_is_a_tool_and_its_test_alone(af: Af, tmp_path: Path) -> None:
    project = tmp_path / "one-tool"
    project.mkdir()  # an empty directory is fine
    assert af("init", "--template", "tool", cwd=project).returncode == 0
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "README.md",
        "tests/test_greet.py",
        "tools/greet.py",
        "tools/greet.yaml",
    ]
    assert "af run greet --tool" in (project / "README.md").read_text()


def test_a_directory_that_is_not_empty_is_refused_and_left_alone(af: Af, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    refused = af("init", str(tmp_path))
    assert refused.returncode == 1
    assert "is not an empty directory" in one_error_line(refused)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]

    unknown = af("init", str(tmp_path / "new"), "--template", "nosuch")
    assert unknown.returncode == 2 and "nosuch" in unknown.stderr
    assert not (tmp_path / "new").exists()
