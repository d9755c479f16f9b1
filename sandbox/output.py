"""What a call's tool writes: stdout up to its cap, the tail of stderr, and the report its sandbox's init slips
into stderr under a nonce (see _child); and the Outcome built from them. Shared by the transports that carry a
tool's output: a process's pipes (processes.Tool) and a container's attach stream (docker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from .protocol import Outcome

_STDERR_TAIL_BYTES = 4096


class Output:
    """Collects a tool's stdout (up to a cap) and the tail of its stderr, and takes the report of the sandbox's
    init out of stderr.

    The report is a stderr line that starts with `nonce`, a secret of the call the tool never sees (so it
    cannot forge the report); without a nonce none is looked for.
    """

    def __init__(self, output_bytes: int, nonce: bytes | None) -> None:
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr_tail = bytearray()
        self.overflowed: asyncio.Future[None] = loop.create_future()
        """Resolves when stdout passes the cap; the runner then kills the tool (which may take a subprocess,
        so it cannot happen in a callback)."""
        self.reported: asyncio.Future[dict[str, Any]] = loop.create_future()
        """Resolves to the report of the sandbox's init, written after its tool has exited (see _child)."""
        self.on_stderr: Callable[[bytes], None] | None = None
        """Given each piece of stderr as it arrives, the report taken out (SandboxCall.on_stderr)."""
        self._output_bytes = output_bytes
        self._nonce = nonce

    def expect_report(self, nonce: bytes) -> None:
        """Look for the report under `nonce` from now on: a sandbox started before its call learns its nonce
        with the call."""
        self._nonce = nonce

    def next_call(self) -> None:
        """Forget the call just reported and collect for the next one, in a sandbox that serves several: what
        its tool writes before its call (a prestarted tool's start-up) belongs to that call."""
        loop = asyncio.get_running_loop()
        self.stdout = bytearray()
        self.stderr_tail = bytearray()
        self.overflowed = loop.create_future()
        self.reported = loop.create_future()
        self.on_stderr = None
        self._nonce = None

    @property
    def output_truncated(self) -> bool:
        return self.overflowed.done()

    def data_received(self, fd: int, data: bytes) -> None:
        if fd == 2:
            if self.on_stderr is not None and (piece := self._without_report(data)):
                self.on_stderr(piece)
            self.stderr_tail += data
            if self._nonce is not None and not self.reported.done():
                self._take_report(self._nonce)
            del self.stderr_tail[:-_STDERR_TAIL_BYTES]
        elif not self.output_truncated:
            room = self._output_bytes - len(self.stdout)
            self.stdout += data[:room]
            if len(data) > room:
                self.overflowed.set_result(None)

    def _without_report(self, data: bytes) -> bytes:
        """``data`` less the init's report line and the newline before it. The init writes both at once, in
        less than a pipe's atomic write, so they arrive in one piece (at worst the newline comes alone)."""
        if self._nonce is None:
            return data
        start = data.find(b"\n" + self._nonce)
        if start < 0 and data.startswith(self._nonce):
            start = -1
        elif start < 0:
            return data
        end = data.find(b"\n", start + 1 + len(self._nonce))
        return data[: max(start, 0)] + (data[end + 1 :] if end >= 0 else b"")

    def _take_report(self, nonce: bytes) -> None:
        """Resolve `reported` once the whole report line is in, and take it out of stderr."""
        start = self.stderr_tail.find(b"\n" + nonce)
        end = self.stderr_tail.find(b"\n", start + 1) if start >= 0 else -1
        if end < 0:
            return
        report = json.loads(self.stderr_tail[start + 1 + len(nonce) : end])
        del self.stderr_tail[start : end + 1]
        # The tool has exited, so what it wrote on stdout is on its way already.
        self.drain_stdout()
        self.reported.set_result(report)

    def drain_stdout(self) -> None:
        """Take what the tool wrote on stdout and is still in transit, where the transport allows it."""


def sandbox_outcome(
    kind: str,
    output: Output,
    exit_code: int | None,
    timed_out: bool,
    report: dict[str, Any] | None,
    run_seconds: float,
    start_seconds: float,
) -> Outcome:
    """The outcome of a call whose sandbox's init reported (or, killed, did not report) its tool's usage."""
    return Outcome(
        kind=kind,
        exit_code=exit_code,
        stdout=bytes(output.stdout),
        stderr_tail=output.stderr_tail.decode("utf-8", errors="replace"),
        timed_out=timed_out,
        output_truncated=output.output_truncated,
        duration_seconds=run_seconds,
        cpu_seconds=report["cpu_seconds"] if report else None,
        max_rss_kb=report["max_rss_kb"] if report else None,
        start_seconds=max(0.0, start_seconds),
    )
