"""The development backend: each call is a plain child process with resource limits and no isolation."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .files import write_files
from .processes import die_with_parent, kill_group, run_tool
from .protocol import Limits, Outcome, SandboxCall, SandboxError
from .workdirs import dead_worker_dirs, own_worker_dir

logger = logging.getLogger(__name__)

_BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


class ProcessBackend:
    """Runs each call as a child process of the worker: for development only, it gives NO isolation.

    The tool shares the worker's user, filesystem, network (`network` is not enforced) and kernel. Per call:
    a fresh working directory (wiped afterwards) holding the call's files, a scrubbed environment, the
    rlimits of `Limits`, and a new session whose whole process group is killed when the tool exits, runs
    past its wall limit or output cap, or the call is cancelled; the tool itself is killed if the worker dies.

    cpu_seconds and max_rss_kb come from the tool's rusage (wait4), its own and that of the descendants it
    waited for. The memory limit is the address space (RLIMIT_AS): an allocation past it fails, and a tool
    that then fails with Python's MemoryError as its last line of stderr is reported as past the limit.

    The calls' dirs live in a dir of this backend's own under `root`; a new backend deletes what backends of
    dead workers left there (a worker killed mid-call cannot wipe its call's dir), and close() its own.
    """

    kind: str = "process"

    def __init__(self, root: Path | str | None = None) -> None:
        """`root` defaults to agentflow-process-<uid> in the temp dir. Blocking: it deletes what dead workers
        left, so open the backend before serving calls."""
        logger.warning(
            "sandbox backend 'process' gives NO isolation: tools run as this user, on this filesystem and "
            "network; use it for development only"
        )
        root = Path(root or Path(tempfile.gettempdir()) / f"agentflow-process-{os.geteuid()}")
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry, pid in dead_worker_dirs(root):
            logger.warning("deleting the call dirs that dead worker process %d left in %s", pid, entry)
            shutil.rmtree(entry, ignore_errors=True)
        self.dir = own_worker_dir(root)
        self.dir.mkdir()

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call in a fresh working directory; SandboxError if it cannot start."""
        logger.debug("call %s runs in the process backend, with NO isolation", call.call_id)
        arrived = time.monotonic()
        if not call.command:
            raise SandboxError(f"call {call.call_id}: empty command")
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="af-call-", dir=self.dir))
        try:
            await asyncio.to_thread(write_files, workdir, call.files)
            return await _run_in(call, workdir, arrived)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)

    def warm_containers(self, call: SandboxCall) -> list[str]:
        """None: the process backend has no warm pools."""
        return []

    async def close(self) -> None:
        """Remove this backend's dir (the dirs of calls still running go with it)."""
        await asyncio.to_thread(shutil.rmtree, self.dir, ignore_errors=True)


async def _run_in(call: SandboxCall, workdir: Path, arrived: float) -> Outcome:
    env = {"PATH": _BASE_PATH, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8", **call.env}
    outcome = await run_tool(
        call,
        ProcessBackend.kind,
        call.command,
        kill=_kill,
        cwd=workdir,
        env=env,
        preexec_fn=_rlimit_setter(call.limits),
        arrived=arrived,
    )
    # Past RLIMIT_AS an allocation fails rather than the process being killed; Python says so as its last word.
    last = (outcome.stderr_tail.strip().splitlines() or [""])[-1]
    if outcome.exit_code and last.startswith("MemoryError"):
        return dataclasses.replace(outcome, memory_exceeded=True)
    return outcome


async def _kill(pgid: int) -> None:
    kill_group(pgid)


def _rlimit_setter(limits: Limits) -> Callable[[], None]:
    """The preexec_fn that applies `limits` in the child, each capped at the worker's own hard limit."""
    wanted = (
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_AS, limits.memory_mb * 1_048_576),
        (resource.RLIMIT_NPROC, limits.processes),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        # A crashing tool should not write a core dump the size of its memory into the working directory.
        (resource.RLIMIT_CORE, 0),
    )
    settings = []
    for which, value in wanted:
        hard = resource.getrlimit(which)[1]
        # Raising a hard limit needs privileges, so asking for more than the worker has would fail the call.
        settings.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))

    def apply() -> None:
        for which, value in settings:
            resource.setrlimit(which, (value, value))
        # A worker killed mid-call cannot stop its tool: the tool dies with it, or it would finish an
        # attempt whose task is redelivered and run again.
        die_with_parent()

    return apply
