"""The development backend: each call is a plain child process with resource limits and no isolation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from .backend import write_files
from .types import Limits, Outcome, SandboxCall, SandboxError

logger = logging.getLogger(__name__)

_BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
_STDERR_TAIL_BYTES = 4096
# After a kill, how long the pipes may take to hand over what is still buffered in them. Bounded because a
# descendant that left the tool's process group can hold them open for ever.
_DRAIN_SECONDS = 2.0


class ProcessBackend:
    """Runs each call as a child process of the worker: for development only, it gives NO isolation.

    The tool shares the worker's user, filesystem, network (`network` is not enforced) and kernel. Per call:
    a fresh working directory (wiped afterwards) holding the call's files, a scrubbed environment, the
    rlimits of `Limits`, and a new session whose whole process group is killed when the tool exits, runs
    past its wall limit or output cap, or the call is cancelled.

    cpu_seconds and max_rss_kb are always None: asyncio's child watcher reaps the tool with a plain waitpid,
    which drops its rusage, and the process-wide RUSAGE_CHILDREN would mix concurrent calls together.
    """

    kind: str = "process"

    def __init__(self) -> None:
        logger.warning(
            "sandbox backend 'process' gives NO isolation: tools run as this user, on this filesystem and "
            "network; use it for development only"
        )

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call in a fresh working directory; SandboxError if it cannot start."""
        logger.debug("call %s runs in the process backend, with NO isolation", call.call_id)
        if not call.command:
            raise SandboxError(f"call {call.call_id}: empty command")
        workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="af-call-"))
        try:
            await asyncio.to_thread(write_files, workdir, call.files)
            return await _run_in(call, workdir)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)

    async def close(self) -> None:
        """Nothing to release: the backend holds no resources between calls."""


class _ToolProtocol(asyncio.SubprocessProtocol):
    """Collects the tool's output as it arrives and notes its exit.

    The protocol rather than asyncio's Process streams because Process.wait() also waits for the pipes to
    close, which a descendant holding them can put off for ever, and a capped stream reader stops reading.
    """

    def __init__(self, output_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr_tail = bytearray()
        self.output_truncated = False
        self.exited: asyncio.Future[float] = loop.create_future()
        """Resolves to the time.monotonic() of the tool's exit."""
        self.finished: asyncio.Future[None] = loop.create_future()
        """Resolves once the tool has exited and all its pipes are closed."""
        self.pid = 0
        """The tool's pid, which is also its process group id (it leads a new session)."""
        self._output_bytes = output_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.pid = cast(asyncio.SubprocessTransport, transport).get_pid()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            self.stderr_tail += data
            del self.stderr_tail[:-_STDERR_TAIL_BYTES]
        elif not self.output_truncated:
            room = self._output_bytes - len(self.stdout)
            self.stdout += data[:room]
            if len(data) > room:
                self.output_truncated = True
                _kill_group(self.pid)

    def process_exited(self) -> None:
        self.exited.set_result(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set_result(None)


async def _run_in(call: SandboxCall, workdir: Path) -> Outcome:
    env = {"PATH": _BASE_PATH, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8", **call.env}
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ToolProtocol(call.limits.output_bytes),
            *call.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            preexec_fn=_rlimit_setter(call.limits),
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SandboxError(f"call {call.call_id}: cannot start {call.command[0]!r}: {error}") from error
    timed_out = False
    try:
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        stdin.write(call.stdin)
        stdin.close()  # after the buffer is flushed; a tool that exits without reading it is no error
        # Shielded: the futures record what became of the tool; a timeout or cancel must not undo that.
        async with asyncio.timeout(call.limits.wall_seconds):
            await asyncio.shield(protocol.exited)
            # Nothing the tool started may outlive the call, and its leftovers would hold the pipes open.
            _kill_group(protocol.pid)
            await asyncio.shield(protocol.finished)
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(protocol.pid)
        try:
            if not protocol.finished.done():
                await asyncio.wait([protocol.finished], timeout=_DRAIN_SECONDS)
        finally:
            transport.close()
    killed_by_us = timed_out or protocol.output_truncated
    return Outcome(
        kind=ProcessBackend.kind,
        exit_code=None if killed_by_us else transport.get_returncode(),
        stdout=bytes(protocol.stdout),
        stderr_tail=protocol.stderr_tail.decode("utf-8", errors="replace"),
        timed_out=timed_out,
        output_truncated=protocol.output_truncated,
        duration_seconds=(protocol.exited.result() if protocol.exited.done() else time.monotonic()) - started,
        cpu_seconds=None,
        max_rss_kb=None,
    )


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

    return apply


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(pgid, signal.SIGKILL)
