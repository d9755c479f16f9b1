"""What the gVisor backends (runsc, docker) share: the user and base environment of a tool in a sandbox, the
Python init that starts it (see _child), and what they refuse before starting anything."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

from . import _child
from .protocol import Limits, Outcome, SandboxCall, SandboxError

TOOL_UID = 65534
"""In a sandbox (runsc, docker) the tool runs as nobody:nogroup (python and coreutils work as nobody)."""
SANDBOX_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
"""The base environment of a tool in a sandbox; the call's own variables go on top."""
LAUNCHER = ("python3", "-I", "-S", "-c", Path(_child.__file__).read_text())
"""The argv of the Python init of a sandbox (see _child)."""


def check_sandboxed_call(call: SandboxCall, backend: str, closed: bool) -> None:
    """What a gVisor backend (runsc, docker) refuses before it starts anything; raises SandboxError."""
    if closed:
        raise SandboxError(f"call {call.call_id}: the {backend} backend is closed")
    if not call.command:
        raise SandboxError(f"call {call.call_id}: empty command")
    if call.network != "none":
        raise SandboxError(
            f"call {call.call_id}: network egress is not available on this machine: runsc's sandbox "
            "network does not start here, only --network=none works"
        )


def launcher_failed(outcome: Outcome) -> bool:
    """Whether a sandbox's init (see _child) could not start the tool at all."""
    return outcome.exit_code == _child.START_FAILED and outcome.stderr_tail.startswith(_child.START_FAILED_PREFIX)


def at_memory_limit(outcome: Outcome, limits: Limits, cpu_seconds: float | None) -> Outcome:
    """``outcome`` marked as past the memory limit if its sandbox was killed as a whole (SIGKILL, no report from
    its init) without us killing it: that is the memory cgroup, which leaves nothing inside to measure the tool,
    so the figures are the sandbox's: ``cpu_seconds`` as the host counted it (None: unknown) and, as its peak
    memory, the limit it reached."""
    if outcome.exit_code != -signal.SIGKILL or outcome.timed_out or outcome.output_truncated:
        return outcome
    return dataclasses.replace(
        outcome, memory_exceeded=True, cpu_seconds=cpu_seconds, max_rss_kb=limits.memory_mb * 1024
    )
