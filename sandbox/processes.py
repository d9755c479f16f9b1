"""Process plumbing: starting a tool (or a sandbox's launcher) in a session of its own, feeding it its input,
collecting its output under the call's limits, and making sure nothing it started outlives the call.

A call ends at the tool's exit, its sandbox init's report, the wall limit, the output cap or a cancel; whatever
ends it, the process group is killed and the pipes closed (bounded: a descendant may hold them for ever).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import os
import resource
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from .output import Output, sandbox_outcome
from .protocol import Outcome, SandboxCall, SandboxError

# After a kill, how long the pipes may take to hand over what is still buffered in them. Bounded because a
# descendant that left the tool's process group can hold them open for ever.
_DRAIN_SECONDS = 2.0
# prctl's option (linux/prctl.h) that has the kernel send the calling process a signal when its parent dies.
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """In a child, before exec: be killed when the worker that started it dies (a ``runsc run`` client, whose
    sandbox then dies too; a tool of the process backend), instead of running on unsupervised."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class Tool(Output):
    """A started process (the tool, or a sandbox's launcher): its output, its exit and its resource use.

    Started with subprocess.Popen and watched through a pidfd rather than with asyncio's subprocess support:
    asyncio's child watcher reaps with a plain waitpid, which drops the tool's rusage, and its Process.wait()
    waits for the pipes to close too, which a descendant holding them can put off for ever.
    """

    def __init__(self, popen: subprocess.Popen[bytes], output_bytes: int, nonce: bytes | None) -> None:
        super().__init__(output_bytes, nonce)
        loop = asyncio.get_running_loop()
        self.pid = popen.pid
        """The pid of the process we started, which is also its process group id (it leads a new session)."""
        self.returncode: int | None = None
        """Like Popen's: minus the signal number if a signal ended it."""
        self.rusage: resource.struct_rusage | None = None
        """The process's resource use (and that of the descendants it waited for), once it has exited."""
        self.exited: asyncio.Future[float] = loop.create_future()
        """Resolves to the time.monotonic() of the process's exit."""
        self.finished: asyncio.Future[None] = loop.create_future()
        """Resolves once the process has exited and its stdout and stderr are closed."""
        self.stdin: asyncio.WriteTransport | None = None
        self._pipes: list[asyncio.ReadTransport] = []
        self._popen = popen
        self._open_pipes = 2
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._reap)

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        popen = self._popen
        assert popen.stdin is not None and popen.stdout is not None and popen.stderr is not None
        self.stdin, _ = await loop.connect_write_pipe(asyncio.Protocol, popen.stdin)
        for fd, pipe in ((1, popen.stdout), (2, popen.stderr)):
            transport, _ = await loop.connect_read_pipe(functools.partial(_Pipe, self, fd), pipe)
            self._pipes.append(transport)

    def drain_stdout(self) -> None:
        """Take what is waiting in the stdout pipe now, without waiting for the event loop to notice it: the
        init's report can come in before the event loop has read the tool's last output."""
        assert self._popen.stdout is not None
        with contextlib.suppress(BlockingIOError, OSError, ValueError):
            while chunk := os.read(self._popen.stdout.fileno(), 65536):
                self.data_received(1, chunk)

    def pipe_closed(self) -> None:
        self._open_pipes -= 1
        self._check_finished()

    def _reap(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        _, status, self.rusage = os.wait4(self.pid, 0)
        self.returncode = os.waitstatus_to_exitcode(status)
        self._popen.returncode = self.returncode  # so that Popen never waits for it again
        self.exited.set_result(time.monotonic())
        self._check_finished()

    def _check_finished(self) -> None:
        if self._open_pipes == 0 and self.exited.done() and not self.finished.done():
            self.finished.set_result(None)

    def close(self) -> None:
        """Close the pipes (the process must have exited or been killed).

        Through their transports, which stop watching them first: a pipe closed under its transport stays in
        the event loop's selector, and a later file descriptor given the same number (a pipe, a pidfd) would
        then never be watched, its output or its exit never seen."""
        if self.stdin is not None:
            self.stdin.close()
        for transport in self._pipes:
            transport.close()
        for pipe in (self._popen.stdout, self._popen.stderr)[len(self._pipes) :]:
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _Pipe(asyncio.Protocol):
    """Hands one output pipe's data to its Tool."""

    def __init__(self, tool: Tool, fd: int) -> None:
        self._tool = tool
        self._fd = fd

    def data_received(self, data: bytes) -> None:
        self._tool.data_received(self._fd, data)

    def eof_received(self) -> None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._tool.pipe_closed()


async def start_tool(
    name: str,
    argv: Sequence[str],
    output_bytes: int,
    *,
    cwd: Path,
    env: Mapping[str, str],
    preexec_fn: Callable[[], None] | None = None,
    nonce: bytes | None = None,
) -> Tool:
    """Start `argv` in a new session with pipes for stdin, stdout and stderr; SandboxError if it cannot start.

    stdout beyond `output_bytes` is dropped. `name` says what is started in the error. With a `nonce`, a
    stderr line starting with it is taken out of stderr and resolves Tool.reported.
    """
    try:
        # On the loop, as asyncio's own subprocess_exec does: fork and exec take a millisecond or two, and a
        # preexec_fn is not safe to run from another thread.
        popen = subprocess.Popen(  # noqa: ASYNC220
            argv,
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
    tool = Tool(popen, output_bytes, nonce)
    try:
        await tool.connect()
    except BaseException:
        kill_group(tool.pid)
        tool.close()
        raise
    return tool


async def run_tool(
    call: SandboxCall,
    kind: str,
    argv: Sequence[str],
    *,
    kill: Callable[[int], Awaitable[None]],
    cwd: Path,
    env: Mapping[str, str],
    preexec_fn: Callable[[], None] | None = None,
    arrived: float,
) -> Outcome:
    """Start `argv` as the tool itself and see the call through with finish_tool; its resource use is the
    process's rusage; `arrived` is the time.monotonic() at which the call reached the backend. SandboxError if
    it cannot start."""
    tool = await start_tool(
        f"call {call.call_id}", argv, call.limits.output_bytes, cwd=cwd, env=env, preexec_fn=preexec_fn
    )
    outcome = await finish_tool(call, kind, tool, call.stdin, kill=kill, arrived=arrived)
    if tool.rusage is None or outcome.timed_out or outcome.output_truncated:
        return outcome
    return dataclasses.replace(
        outcome,
        cpu_seconds=tool.rusage.ru_utime + tool.rusage.ru_stime,
        max_rss_kb=tool.rusage.ru_maxrss,
    )


async def finish_tool(
    call: SandboxCall,
    kind: str,
    tool: Tool,
    stdin_data: bytes,
    *,
    kill: Callable[[int], Awaitable[None]],
    arrived: float,
    settle: Callable[[Coroutine[Any, Any, None]], object] | None = None,
    keep: bool = False,
) -> Outcome:
    """Feed `stdin_data` to a started tool and collect its output until it exits, under call.limits.

    `kill(pid)` must end the tool and everything it started, given the pid of what was started; it is awaited
    on the wall limit, the output cap and cancellation. Whatever is left of the process group after that
    or after a normal exit is killed as well. The wall limit counts from now; `arrived` is the
    time.monotonic() at which the call reached the backend.

    A sandbox's init that reports its tool's end (Tool.reported) ends the call at once: its exit status and
    measures are the report's, and waiting for the process (the sandbox's teardown) is handed to `settle`,
    off the call's path. With `keep` (a sandbox that serves several calls) the process is left running after
    the report, its stdin open.
    """
    started = time.monotonic()
    timed_out = False
    tool.on_stderr = call.on_stderr  # here, not at the start: a warm sandbox is started before its call
    try:
        assert tool.stdin is not None
        tool.stdin.write(stdin_data)
        if not keep:
            tool.stdin.close()  # after the buffer is flushed; a tool that exits without reading it is no error
        # asyncio.wait leaves the futures alone: they record what became of the tool, and a timeout or
        # cancel must not undo that.
        async with asyncio.timeout(call.limits.wall_seconds):
            ending: list[asyncio.Future[Any]] = [tool.exited, tool.overflowed, tool.reported]
            await asyncio.wait(ending, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        timed_out = True
    except BaseException:
        await _end(tool, kill)
        raise
    ended = time.monotonic()
    killed_by_us = timed_out or tool.output_truncated
    if tool.reported.done() and not killed_by_us and keep:
        pass  # the sandbox serves on
    elif tool.reported.done() and not killed_by_us and settle is not None:
        settle(_end(tool, kill))
    else:
        await _end(tool, kill)
    report = tool.reported.result() if tool.reported.done() and not killed_by_us else None
    if report is None and tool.exited.done():
        ended = tool.exited.result()
    run_seconds = float(report["run_seconds"]) if report else ended - started
    exit_code = None if killed_by_us else int(report["exit_code"]) if report else tool.returncode
    return sandbox_outcome(kind, tool, exit_code, timed_out, report, run_seconds, ended - arrived - run_seconds)


async def _end(tool: Tool, kill: Callable[[int], Awaitable[None]]) -> None:
    """Make sure the tool and everything it started are gone, and close its pipes."""
    try:
        if not tool.exited.done():  # past the wall limit or the output cap, cancelled, or reported
            if not tool.reported.done():
                await kill(tool.pid)
            # Time to exit by itself: a launcher such as `runsc run` then tears its sandbox down.
            await asyncio.wait([tool.exited], timeout=_DRAIN_SECONDS)
    finally:
        # Nothing the tool started may outlive the call, and its leftovers would hold the pipes open;
        # this runs even when a second cancel interrupts `kill`.
        kill_group(tool.pid)
        try:
            if not tool.finished.done():
                await asyncio.wait([tool.finished], timeout=_DRAIN_SECONDS)
        finally:
            tool.close()


def kill_group(pgid: int) -> None:
    """SIGKILL the process group `pgid`, if it is still there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
