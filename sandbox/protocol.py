"""What a sandbox backend is: the Backend protocol, the call it takes (SandboxCall under Limits), the Outcome it
gives back and the SandboxError it raises when a call cannot start. Every backend module builds on this one, and
this one on nothing of the package."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits of one tool call."""

    wall_seconds: float = 30.0
    """Wall-clock limit of the whole call; past it the tool and everything it started are killed."""

    cpu_seconds: int = 30
    """CPU time of the tool's process (RLIMIT_CPU); each process it starts gets the same allowance."""

    memory_mb: int = 512
    """Memory in MiB. process: the tool's address space (RLIMIT_AS), virtual memory, not resident memory;
    runsc: the sandbox's memory cgroup, which kills the whole sandbox past it."""

    processes: int = 64
    """Processes and threads of the user the tool runs as (RLIMIT_NPROC). process: the kernel counts every
    process of that user, not only the tool's, and does not enforce the limit at all for root; runsc: each
    sandbox has a kernel of its own, so only the call's processes count."""

    output_bytes: int = 1_048_576
    """Cap on stdout; a tool that writes more is killed and its outcome marked output_truncated."""

    file_bytes: int = 64 * 1_048_576
    """Largest file the tool may write (RLIMIT_FSIZE)."""


@dataclass(frozen=True, slots=True)
class SandboxCall:
    """One run of one tool: what to execute, with which input, under which limits."""

    call_id: str
    """Unique id of the call (the task id and attempt), used in names and logs."""

    command: tuple[str, ...]
    """The argv to run, with the call's fresh working directory as the current directory."""

    stdin: bytes
    """The tool's input JSON document, written to its stdin."""

    files: Mapping[str, str] = field(default_factory=dict)
    """Relative path -> text content, written into the working directory before the run. Absolute paths
    and paths with a '..' component are refused with SandboxError."""

    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment variables, on top of the backend's scrubbed base environment."""

    limits: Limits = Limits()
    """Resource limits of the call."""

    network: Literal["none", "egress"] = "none"
    """'none': no network at all; 'egress': outbound connections allowed."""

    image: str | None = None
    """The container image to run in (docker; it must hold python3 for the sandbox's init); None: the
    backend's own image, which holds the host's /usr read-only. runsc always uses the host's /usr."""

    pool: str = ""
    """Calls with the same pool and limits share a warm pool (runsc); the worker names one per tenant and
    tool version."""

    warm: int = 0
    """Sandboxes to keep started ahead for this call's pool (runsc); 0: the backend's default."""

    prestart: bool = False
    """runsc, in a warm pool: each warm sandbox starts the tool's own process ahead of its call, blocked on its
    stdin, so the call skips the tool's exec and start-up. The tool then runs with the sandbox's base
    environment only: `env` is not given to it (nor on a cold call of the same pool, so that a tool never
    sees it only sometimes)."""

    reuse: bool = False
    """runsc: the sandbox outlives the call and serves the next calls of its pool (the worker names one per
    tenant and tool version), each with a fresh tool process, whatever it left running killed and /work and
    /tmp wiped between them. Faster under load, but not a fresh kernel per call: see RunscBackend."""

    on_stderr: Callable[[bytes], None] | None = None
    """Given each piece of the tool's stderr as it arrives, on the event loop, while the call runs (the report
    of a sandbox's init taken out); it must not block. The Outcome's stderr_tail is kept all the same."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one call that could be started."""

    kind: str
    """The kind of sandbox that ran the call: "process", "runsc-cold" (a sandbox created for it), "runsc-warm"
    (one from the warm pool, prestarted or reused included) or "docker"."""

    exit_code: int | None
    """The tool's exit status; minus the signal number if a signal it did not get from us ended it; None
    when we killed it (wall limit or output cap)."""

    stdout: bytes
    """What the tool wrote to stdout, at most limits.output_bytes."""

    stderr_tail: str
    """The last 4 KiB of the tool's stderr, decoded as UTF-8 with errors replaced."""

    timed_out: bool
    """The call ran past limits.wall_seconds and was killed."""

    output_truncated: bool
    """The tool wrote more than limits.output_bytes to stdout and was killed."""

    duration_seconds: float
    """The run: wall time from the start of the tool's process to its exit."""

    cpu_seconds: float | None
    """User plus system CPU time of the tool's process and the descendants it waited for; None when we killed
    the call, which leaves nobody to measure it. A runsc sandbox killed at its memory limit: the CPU time of
    the whole sandbox (its boot included) as the host counted it."""

    max_rss_kb: int | None
    """Peak resident memory in KiB of the tool's process or of the largest descendant it waited for; None like
    cpu_seconds. A sandbox killed at its memory limit: that limit, which its memory reached."""

    start_seconds: float = 0.0
    """The start: from the call reaching the backend to the start of the tool's process (working dir and
    files, bundle, sandbox creation, handing the call to a warm sandbox)."""

    memory_exceeded: bool = False
    """The call went past limits.memory_mb: a gVisor sandbox killed as a whole by its memory cgroup, or (process)
    a tool that failed with Python's MemoryError under its address-space limit."""


class SandboxError(Exception):
    """The call could not be started at all (bad files, command not found, ...); the message says why."""


class Backend(Protocol):
    """Runs tool calls in isolation. One backend serves many concurrent calls; close it once at the end."""

    kind: str
    """The backend's name, as SandboxSettings.backend gives it and every Outcome reports it."""

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call to its end (exit, wall limit or output cap); raise SandboxError if it cannot start."""
        ...

    def warm_containers(self, call: SandboxCall) -> list[str]:
        """The ids of the warm sandboxes ready for `call`; always empty for a backend without warm pools.

        run() takes a ready one before its first await, so a caller that looks just before it learns whether
        the call starts warm."""
        ...

    async def close(self) -> None:
        """Release what the backend holds (pools, connections)."""
        ...
