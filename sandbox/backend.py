"""What every sandbox backend offers, how to open one by name, and the work all backends share."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol, cast

from .types import Outcome, SandboxCall, SandboxError

_STDERR_TAIL_BYTES = 4096
# After a kill, how long the pipes may take to hand over what is still buffered in them. Bounded because a
# descendant that left the tool's process group can hold them open for ever.
_DRAIN_SECONDS = 2.0


class Backend(Protocol):
    """Runs tool calls in isolation. One backend serves many concurrent calls; close it once at the end."""

    kind: str
    """The backend's name, as given to open_backend and reported in every Outcome."""

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call to its end (exit, wall limit or output cap); raise SandboxError if it cannot start."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (pools, connections)."""
        ...


def _open_process() -> Backend:
    # Imported here so that a backend's dependencies load only when that backend is chosen.
    from .process import ProcessBackend

    return ProcessBackend()


def _open_runsc() -> Backend:
    from .runsc import RunscBackend

    return RunscBackend()


_OPENERS: dict[str, Callable[[], Backend]] = {"process": _open_process, "runsc": _open_runsc}


def open_backend(name: str) -> Backend:
    """The backend called `name` (the AF_SANDBOX setting); SandboxError naming the choices if none is."""
    opener = _OPENERS.get(name)
    if opener is None:
        raise SandboxError(f"unknown sandbox backend {name!r}; valid choices: {', '.join(sorted(_OPENERS))}")
    return opener()


def write_files(root: Path, files: Mapping[str, str]) -> None:
    """Write a call's files below `root`, refusing (SandboxError) any path that would leave it.

    Blocking: run it off the event loop.
    """
    targets = []
    for name, content in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise SandboxError(f"file path {name!r} must be relative and stay inside the working directory")
        targets.append((root.joinpath(*relative.parts), content))
    for target, content in targets:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        except OSError as error:
            raise SandboxError(f"cannot write file {target.relative_to(root)}: {error}") from error


class ToolProtocol(asyncio.SubprocessProtocol):
    """Collects the tool's output as it arrives and notes its exit.

    The protocol rather than asyncio's Process streams because Process.wait() also waits for the pipes to
    close, which a descendant holding them can put off for ever, and a capped stream reader stops reading.
    """

    def __init__(self, output_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr_tail = bytearray()
        self.exited: asyncio.Future[float] = loop.create_future()
        """Resolves to the time.monotonic() of the tool's exit."""
        self.overflowed: asyncio.Future[None] = loop.create_future()
        """Resolves when stdout passes the cap; the runner then kills the tool (which may take a subprocess,
        so it cannot happen in this callback)."""
        self.finished: asyncio.Future[None] = loop.create_future()
        """Resolves once the tool has exited and all its pipes are closed."""
        self.pid = 0
        """The pid of the process we started, which is also its process group id (it leads a new session)."""
        self._output_bytes = output_bytes

    @property
    def output_truncated(self) -> bool:
        return self.overflowed.done()

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
                self.overflowed.set_result(None)

    def process_exited(self) -> None:
        self.exited.set_result(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        self.finished.set_result(None)


async def start_tool(
    name: str,
    argv: Sequence[str],
    output_bytes: int,
    *,
    cwd: Path,
    env: Mapping[str, str],
    preexec_fn: Callable[[], None] | None = None,
) -> tuple[asyncio.SubprocessTransport, ToolProtocol]:
    """Start `argv` in a new session with pipes for stdin, stdout and stderr; SandboxError if it cannot start.

    stdout beyond `output_bytes` is dropped. `name` says what is started in the error.
    """
    loop = asyncio.get_running_loop()
    try:
        return await loop.subprocess_exec(
            lambda: ToolProtocol(output_bytes),
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SandboxError(f"{name}: cannot start {argv[0]!r}: {error}") from error


async def run_tool(
    call: SandboxCall,
    kind: str,
    argv: Sequence[str],
    *,
    kill: Callable[[int], Awaitable[None]],
    cwd: Path,
    env: Mapping[str, str],
    preexec_fn: Callable[[], None] | None = None,
) -> Outcome:
    """Start `argv` (the tool, or a launcher such as `runsc run` whose exit is the tool's) and see the call
    through with finish_tool; SandboxError if it cannot start."""
    tool = await start_tool(
        f"call {call.call_id}", argv, call.limits.output_bytes, cwd=cwd, env=env, preexec_fn=preexec_fn
    )
    return await finish_tool(call, kind, tool, call.stdin, kill=kill)


async def finish_tool(
    call: SandboxCall,
    kind: str,
    tool: tuple[asyncio.SubprocessTransport, ToolProtocol],
    stdin_data: bytes,
    *,
    kill: Callable[[int], Awaitable[None]],
) -> Outcome:
    """Feed `stdin_data` to a started tool and collect its output until it exits, under call.limits.

    `kill(pid)` must end the tool and everything it started, given the pid of what was started; it is awaited
    on the wall limit, the output cap and cancellation. Whatever is left of the process group after that
    or after a normal exit is killed as well. The wall limit and the duration count from now.
    """
    transport, protocol = tool
    started = time.monotonic()
    timed_out = False
    try:
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        stdin.write(stdin_data)
        stdin.close()  # after the buffer is flushed; a tool that exits without reading it is no error
        # asyncio.wait leaves the futures alone: they record what became of the tool, and a timeout or
        # cancel must not undo that.
        async with asyncio.timeout(call.limits.wall_seconds):
            ending: list[asyncio.Future[Any]] = [protocol.exited, protocol.overflowed]
            await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        timed_out = True
    finally:
        try:
            if not protocol.exited.done():  # past the wall limit or the output cap, or cancelled
                await kill(protocol.pid)
                # Time to exit by itself: a launcher such as `runsc run` then tears its sandbox down.
                await asyncio.wait([protocol.exited], timeout=_DRAIN_SECONDS)
        finally:
            # Nothing the tool started may outlive the call, and its leftovers would hold the pipes open;
            # this runs even when a second cancel interrupts `kill`.
            kill_group(protocol.pid)
            try:
                if not protocol.finished.done():
                    await asyncio.wait([protocol.finished], timeout=_DRAIN_SECONDS)
            finally:
                transport.close()
    killed_by_us = timed_out or protocol.output_truncated
    return Outcome(
        kind=kind,
        exit_code=None if killed_by_us else transport.get_returncode(),
        stdout=bytes(protocol.stdout),
        stderr_tail=protocol.stderr_tail.decode("utf-8", errors="replace"),
        timed_out=timed_out,
        output_truncated=protocol.output_truncated,
        duration_seconds=(protocol.exited.result() if protocol.exited.done() else time.monotonic()) - started,
        cpu_seconds=None,
        max_rss_kb=None,
    )


def kill_group(pgid: int) -> None:
    """SIGKILL the process group `pgid`, if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
