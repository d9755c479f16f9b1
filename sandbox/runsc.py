"""The gVisor backend: each call runs in a fresh runsc sandbox built from its own OCI bundle."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _child
from .files import write_files
from .gvisor import LAUNCHER, SANDBOX_ENV, TOOL_UID, at_memory_limit, check_sandboxed_call, launcher_failed
from .processes import Tool, die_with_parent, finish_tool, start_tool
from .protocol import Limits, Outcome, SandboxCall, SandboxError
from .workdirs import dead_worker_dirs, own_worker_dir

logger = logging.getLogger(__name__)

# The runsc client needs nothing of the worker's environment; the tool's comes from config.json alone.
_CLIENT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
_TMP_MB = 64
_NOFILE = 1024
# `runsc run` exits with 128 when it could not start the container, and its message starts like this.
_START_FAILED = 128
_START_FAILED_PREFIX = "running container: "
_RUNSC_HELPER_SECONDS = 30.0
"""Bound on a `runsc kill`, `delete` or `list`, which normally take about 30 ms."""
_INSTALL_HINT = (
    "install it with `apt-get install runsc` (Debian/Ubuntu; `make system-deps` does it), "
    "or choose AF_SANDBOX=process for development"
)
_RETIRE_SECONDS = 5.0
"""How long an unused warm sandbox may take to end once told to."""
_REUSE_CALLS = 1000
"""Calls a reused sandbox serves before it is replaced: its init's own CPU time counts against RLIMIT_CPU."""


class RunscBackend:
    """Runs each call in its own gVisor sandbox (`runsc run`), created for the call and deleted after it.

    Per call: an OCI bundle whose root is a shared, read-only rootfs holding the host's /usr read-only (and
    the merged-/usr symlinks bin, lib, lib64, sbin), a minimal /etc of our own, nothing else of the host;
    a fresh writable scratch dir at /work (the call's files, the cwd, wiped afterwards); /tmp a small tmpfs;
    the tool as nobody with no capabilities and no_new_privs, a scrubbed environment, `--network=none`.
    Limits: memory and one CPU through OCI `linux.resources`; processes (RLIMIT_NPROC, which gVisor's own
    kernel enforces per sandbox), CPU time, file size, open files and core dumps as rlimits; the wall limit
    and output cap by `runsc kill`. The host pids cgroup is not used: it would count the sandbox's own
    threads (about 200 host tasks for 32 sandboxed processes on the ptrace platform), and with a small limit
    the sandbox cannot even boot.

    Every sandbox's init is init.c (built at start; _child.py's Python without a C compiler), which waits for
    its call on stdin (so per-call secrets never reach config.json), starts the tool, waits for it and reports
    on stderr, under a nonce the tool never sees, the tool's exit status, run time, CPU time and peak memory
    as gVisor's kernel counted them (wait4).
    The call ends with that report; the sandbox's teardown and deletion go on in the background. A call
    killed by us has no report, and no CPU time or peak memory. An exit status above 128 without a report is
    turned back into minus a signal number: runsc reports a sandbox killed by signal N as 128 + N, as a shell
    does. A sandbox SIGKILLed that way was stopped by its memory cgroup: the outcome says the memory limit was
    exceeded, with the sandbox's CPU time as the host counted it and the limit as its peak memory.

    Warm pools: for each pool a call names (the worker names one per tenant and tool version) and its Limits,
    `call.warm` sandboxes (else the backend's `warm`) are started ahead of their calls. A call takes one,
    writes its files into its /work and sends its call. A warm sandbox serves one call and is deleted after
    it, as on the cold path; a keeper task per pool starts the replacements, and drops the pool after
    `idle_seconds` without a call. With no warm sandbox ready a call takes the cold path.

    Prestart (`call.prestart`, in a warm pool): the warm sandbox's init (init.c's `--serve`) has the tool's own
    process started already, its files in /work and the base environment, blocked reading its stdin; the call
    sends its nonce and input, which the init passes on. Under the ptrace platform the tool's exec and start-up
    (python3's, about 60 ms) were most of a warm call's cost. The call's own environment never reaches such a
    tool (cold calls of the pool drop it too); a tool that reads it asks for no prestart.

    Reuse (`call.reuse`): the sandbox goes back into its pool after its call and serves the next calls of the
    same pool (tenant and tool version: the worker's pool name) and limits, never another's, up to
    `_REUSE_CALLS`; a fresh tool process per call (prestarted or not), and between calls its init kills every
    process the call left, then wipes /work and /tmp and writes the tool's files again (a sandbox whose
    scratch cannot be wiped ends instead). A call that timed out, overflowed, was cancelled or hit the memory
    limit ends its sandbox as ever. What is not renewed between calls: the sandbox's kernel (gVisor's Sentry:
    its page cache, SysV IPC objects, its memory), so a call can leave state a later call of the same tenant
    and tool version may see, or exhaust what they share; the boot (about 125 ms of CPU) is paid once
    instead of per call. Needs init.c: with the Python init, calls take the one-call paths.

    State lives in a dir per backend under `root`; a new backend deletes the sandboxes and dirs that dead
    workers left there, and close() those of its own.
    """

    kind: str = "runsc"

    def __init__(
        self,
        root: Path | str | None = None,
        runsc: str = "runsc",
        warm: int = 0,
        idle_seconds: float = 60.0,
    ) -> None:
        """Find runsc (SandboxError saying how to install it if missing) and clean up after dead workers.

        `root` defaults to /var/run/agentflow/runsc for root, else a dir in the temp dir (the worker's
        setting: SandboxSettings.runsc_root). `warm` sandboxes (SandboxSettings.runsc_warm) are kept ready for
        each pool in use whose calls ask for no number of their own, and dropped after `idle_seconds` without a
        call of that pool. Blocking: it runs runsc to delete leftovers, so open the backend before serving
        calls.
        """
        found = shutil.which(runsc)
        if found is None:
            raise SandboxError(
                f"the runsc sandbox backend needs gVisor's runsc, which is not installed: {_INSTALL_HINT}"
            )
        self._runsc = found
        self._warm = warm
        self._idle_seconds = idle_seconds
        self.root = Path(root or _default_root())
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._reap_dead_workers()
        self.dir = own_worker_dir(self.root)
        """This backend's state dir: runsc's state, the shared rootfs and one bundle per sandbox."""
        self.state = self.dir / "runsc"
        """The `runsc --root` of this backend's sandboxes."""
        self._rootfs = self.dir / "rootfs"
        self._calls = self.dir / "calls"
        self._calls.mkdir(parents=True)
        self.state.mkdir(mode=0o700)
        _build_rootfs(self._rootfs)
        self._init = _install_init(self._rootfs)
        self._preload = _PRELOAD if self._init != LAUNCHER else ()
        self._pools: dict[tuple[str, Limits, _Served | None], _Pool] = {}
        self._cleanups: set[asyncio.Future[None]] = set()
        self._closed = False

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call in a sandbox of its own, a warm one if one is ready; SandboxError if it cannot start."""
        check_sandboxed_call(call, "runsc", self._closed)
        arrived = time.monotonic()
        served = self._serving(call)
        warm, pool = self._take_warm(call, served)
        if pool is not None and pool.served is not None and (warm is not None or pool.served.reuse):
            return await self._run_served(call, pool, pool.served, warm, arrived)
        # A call of a prestarted pool that finds no sandbox ready: its tool gets what a prestarted one would.
        env = SANDBOX_ENV if served else {**SANDBOX_ENV, **call.env}
        container = warm.container if warm else _container_id(call.call_id)
        bundle = self._calls / container
        kill = functools.partial(self._kill, container)
        told = False  # whether the sandbox has been sent its call
        teardown: list[Coroutine[Any, Any, None]] = []  # the sandbox's end, once its init has reported
        try:
            if warm:
                if call.files:  # its /work exists already, owned by the tool's user
                    await asyncio.to_thread(_write_work, bundle / "work", call.files)
                tool, nonce = warm.tool, warm.nonce
            else:
                config = self._config(call.limits, container, bundle, self._init, SANDBOX_ENV)
                await asyncio.to_thread(_write_bundle, bundle, config, call.files)
                nonce = secrets.token_hex(16).encode()
                tool = await self._start(container, call.limits, f"call {call.call_id}", nonce)
            assert nonce is not None  # a sandbox of the one-call path has its nonce from the start
            told = True
            request = _child.request(nonce.decode(), list(call.command), env, {})
            stdin = request + call.stdin
            kind = "runsc-warm" if warm else "runsc-cold"
            outcome = await finish_tool(call, kind, tool, stdin, kill=kill, arrived=arrived, settle=teardown.append)
        finally:
            # Shielded, and remembered so that close() can wait for it: a second cancel must not leave the
            # sandbox or the scratch dir behind. A sandbox whose init reported ends off the call's path.
            cleanup = self._retire(warm) if warm and not told else self._clean_up(container, bundle, *teardown)
            tracked = self._track(cleanup)
            if not teardown:
                await asyncio.shield(tracked)
        return _checked(call, tool, outcome, tool.reported.done())

    async def _run_served(
        self, call: SandboxCall, pool: _Pool, served: _Served, warm: _Warm | None, arrived: float
    ) -> Outcome:
        """Run `call` in a served sandbox (init.c's `--serve`): `warm`, or with reuse and none idle, one started
        for it; a reused one goes back into `pool` after a call that ended with its init's report."""
        kind = "runsc-warm" if warm else "runsc-cold"
        pool.busy += 1
        teardown: list[Coroutine[Any, Any, None]] = []
        told = False
        try:
            if warm is None:
                warm = await self._start_warm(call.limits, served)
            nonce = secrets.token_hex(16).encode()
            passed = call.stdin
            if not served.command:  # the tool's child waits for the one-call protocol
                env = {**SANDBOX_ENV, **call.env}
                passed = _child.request(nonce.decode(), list(call.command), env, {}) + call.stdin
            warm.tool.expect_report(nonce)
            keep = served.reuse and warm.calls + 1 < _REUSE_CALLS
            kill = functools.partial(self._kill, warm.container)
            told = True
            frame = _field(nonce) + _field(passed)
            outcome = await finish_tool(
                call, kind, warm.tool, frame, kill=kill, arrived=arrived, settle=teardown.append, keep=keep
            )
        except BaseException:
            # Shielded, and remembered so that close() can wait for it, as on the one-call path.
            if warm is not None:
                ending = self._clean_up(warm.container, self._calls / warm.container) if told else self._retire(warm)
                await asyncio.shield(self._track(ending))
            raise
        finally:
            pool.busy -= 1
            pool.wanted.set()  # the keeper counts busy sandboxes of a reused pool: one may not come back
        reported = warm.tool.reported.done()  # before next_call() forgets it
        if keep and reported and not warm.tool.exited.done() and outcome.exit_code is not None:
            warm.tool.next_call()
            warm.calls += 1
            if self._closed or pool.keeper is None or pool.keeper.done():
                self._track(self._retire(warm))
            else:
                pool.ready.insert(0, warm)  # the one used last goes first: the others may go idle and end
        else:
            cleanup = self._track(self._clean_up(warm.container, self._calls / warm.container, *teardown))
            if not teardown:
                await asyncio.shield(cleanup)
        return _checked(call, warm.tool, outcome, reported)

    def warm_containers(self, call: SandboxCall) -> list[str]:
        """The ids of the warm sandboxes ready for `call` (reused ones waiting for their next call included)."""
        pool = self._pools.get((call.pool, call.limits, self._serving(call)))
        return [warm.container for warm in pool.ready] if pool else []

    async def settled(self) -> None:
        """Wait until the sandboxes and scratch dirs of finished calls are gone (deleted off the calls' path)."""
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def close(self) -> None:
        """Delete every sandbox this backend still has and remove its state dir."""
        self._closed = True
        for pool in self._pools.values():
            pool.wanted.set()
        await asyncio.gather(*(pool.keeper for pool in self._pools.values() if pool.keeper), return_exceptions=True)
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        await asyncio.to_thread(self._remove_worker_dir, self.dir)

    def _run_argv(self, container: str) -> tuple[str, ...]:
        bundle = self._calls / container
        return (self._runsc, "--root", str(self.state), "--network=none", "run", "--bundle", str(bundle), container)

    def _track(self, cleanup: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Run `cleanup` as a task that close() waits for."""
        task = asyncio.ensure_future(cleanup)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
        return task

    def _serving(self, call: SandboxCall) -> _Served | None:
        """What the served sandboxes of `call`'s pool start with, if its calls are served (prestart or reuse)."""
        if self._init == LAUNCHER:  # the Python init has no --serve
            return None
        files = tuple(sorted(call.files.items()))
        command = call.command if call.prestart else ()
        if call.reuse:
            return _Served(command, files, reuse=True)
        if call.prestart and (call.warm or self._warm):
            return _Served(command, files, reuse=False)
        return None

    def _take_warm(self, call: SandboxCall, served: _Served | None) -> tuple[_Warm | None, _Pool | None]:
        """A ready warm sandbox for `call`, if any, and its pool (none without warm sandboxes or reuse), with a
        nudge to the pool's keeper to replace it."""
        size = call.warm or self._warm
        if not size and not (served and served.reuse):
            return None, None
        pool = self._pools.setdefault((call.pool, call.limits, served), _Pool(served))
        pool.size = size
        pool.last_used = time.monotonic()
        taken = None
        while pool.ready and taken is None:
            candidate = pool.ready.pop(0)
            if candidate.tool.exited.done():  # it died while it waited
                self._track(self._retire(candidate))
            else:
                taken = candidate
        # At once rather than after the call: calls one after another are bounded by how fast sandboxes boot,
        # and a replacement started now is ready a call sooner.
        pool.wanted.set()
        if pool.keeper is None or pool.keeper.done():
            pool.keeper = asyncio.ensure_future(self._keep(call.limits, pool))
        return taken, pool

    async def _keep(self, limits: Limits, pool: _Pool) -> None:
        """Keep `pool` full until the backend closes or the pool has gone `idle_seconds` without a call."""
        try:
            while not self._closed:
                if len(pool.ready) + pool.busy * (pool.served is not None and pool.served.reuse) < pool.size:
                    pool.ready.append(await self._start_warm(limits, pool.served))
                    continue
                pool.wanted.clear()
                idle_left = pool.last_used + self._idle_seconds - time.monotonic()
                if idle_left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(idle_left):
                        await pool.wanted.wait()
        except (SandboxError, OSError) as error:
            logger.warning("cannot start a warm sandbox (calls start cold meanwhile): %s", error)
        finally:
            retired, pool.ready = pool.ready, []
            for warm in retired:
                self._track(self._retire(warm))

    async def _start_warm(self, limits: Limits, served: _Served | None) -> _Warm:
        """Start a sandbox for calls of `limits` whose init waits for its call (see _child), or, `served`, one
        whose init serves calls (init.c's --serve) and has their tool started already if it prestarts."""
        container = _container_id("warm")
        bundle = self._calls / container
        argv = (*self._init, *self._preload)
        nonce: bytes | None = secrets.token_hex(16).encode()
        if served is not None:
            argv, nonce = (*self._init, "--serve", "1" if served.reuse else "0", *served.command), None
        config = self._config(limits, container, bundle, argv, SANDBOX_ENV)
        await asyncio.to_thread(_write_bundle, bundle, config, {})
        tool = await self._start(container, limits, f"warm sandbox {container}", nonce)
        if served is not None:
            assert tool.stdin is not None
            tool.stdin.write(_field(b"".join(_field(part.encode()) for pair in served.files for part in pair)))
        return _Warm(container, tool, nonce)

    async def _start(self, container: str, limits: Limits, name: str, nonce: bytes | None) -> Tool:
        """Start the sandbox of a written bundle, its init waiting for its call, whose report will carry `nonce`
        (None: the call will tell). If it cannot start, its bundle is cleaned up."""
        bundle = self._calls / container
        try:
            tool = await start_tool(
                name,
                self._run_argv(container),
                limits.output_bytes,
                cwd=bundle,
                env=_CLIENT_ENV,
                preexec_fn=die_with_parent,
                nonce=nonce,
            )
        except BaseException:
            await asyncio.shield(self._track(self._clean_up(container, bundle)))
            raise
        return tool

    async def _retire(self, warm: _Warm) -> None:
        """End an unused warm sandbox with an empty call: at EOF its init exits."""
        call = SandboxCall(
            call_id=warm.container, command=self._init, stdin=b"", limits=Limits(wall_seconds=_RETIRE_SECONDS)
        )
        try:
            kill = functools.partial(self._kill, warm.container)
            await finish_tool(call, self.kind, warm.tool, b"", kill=kill, arrived=time.monotonic())
        finally:
            await self._clean_up(warm.container, self._calls / warm.container)

    def _config(
        self, limits: Limits, container: str, bundle: Path, argv: Sequence[str], env: Mapping[str, str]
    ) -> dict[str, Any]:
        """The OCI runtime spec of one sandbox."""
        memory = limits.memory_mb * 1_048_576
        no_capabilities: dict[str, list[str]] = {
            name: [] for name in ("bounding", "effective", "inheritable", "permitted", "ambient")
        }
        return {
            "ociVersion": "1.0.2",
            "process": {
                "user": {"uid": TOOL_UID, "gid": TOOL_UID},
                "args": list(argv),
                "env": [f"{name}={value}" for name, value in env.items()],
                "cwd": "/work",
                "noNewPrivileges": True,
                "capabilities": no_capabilities,
                "rlimits": [
                    _rlimit("RLIMIT_NOFILE", _NOFILE),
                    _rlimit("RLIMIT_FSIZE", limits.file_bytes),
                    # A crashing tool should not write a core dump the size of its memory into /work.
                    _rlimit("RLIMIT_CORE", 0),
                    _rlimit("RLIMIT_NPROC", limits.processes),
                    _rlimit("RLIMIT_CPU", limits.cpu_seconds),
                ],
            },
            "root": {"path": str(self._rootfs), "readonly": True},
            "hostname": "sandbox",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "ro"]},
                {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
                {"destination": "/work", "type": "bind", "source": str(bundle / "work"), "options": ["rbind", "rw"]},
                {
                    "destination": "/tmp",
                    "type": "tmpfs",
                    "source": "tmpfs",
                    "options": ["nosuid", "nodev", f"size={_TMP_MB}m", "mode=1777"],
                },
            ],
            "linux": {
                "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
                # runsc applies linux.resources only when the container has a cgroup path.
                "cgroupsPath": f"/agentflow/{container}",
                "resources": {
                    "memory": {"limit": memory, "swap": memory},
                    "cpu": {"quota": 100_000, "period": 100_000},
                },
            },
        }

    async def _kill(self, container: str, client_pid: int) -> None:
        """End a sandbox before its tool exits. The `runsc run` client, which sees its tool die, reaps and
        deletes the sandbox itself (finish_tool gives it the time); killing the client instead would leave a
        stopped container whose `runsc delete` waits for the orphaned sandbox to be reaped, 1.5 s here."""
        await self._runsc_quietly("kill", container, "KILL")

    async def _clean_up(self, container: str, bundle: Path, *teardown: Coroutine[Any, Any, None]) -> None:
        for ending in teardown:  # the runsc client's exit, which deletes the sandbox
            await ending
        # A `runsc run` that saw its tool exit has deleted the container itself; a killed one leaves it
        # behind. Deleting only then saves a runsc process (about 30 ms) on most calls.
        if await asyncio.to_thread(self._left_behind, container):
            await self._runsc_quietly("delete", "--force", container)
        await asyncio.to_thread(shutil.rmtree, bundle, ignore_errors=True)

    def _left_behind(self, container: str) -> bool:
        try:
            return any(container in name for name in os.listdir(self.state))
        except FileNotFoundError:  # close() has removed everything already
            return False

    async def _runsc_quietly(self, *args: str) -> None:
        """Run one runsc command on this backend's sandboxes; failures (the container is gone) are logged."""
        helper = await asyncio.create_subprocess_exec(
            self._runsc,
            "--root",
            str(self.state),
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_CLIENT_ENV,
        )
        try:
            async with asyncio.timeout(_RUNSC_HELPER_SECONDS):
                _, stderr = await helper.communicate()
        except TimeoutError:
            # Not raised: the caller is cleaning up, and close() deletes whatever this one did not.
            logger.warning("runsc %s did not finish within %g s", " ".join(args), _RUNSC_HELPER_SECONDS)
            return
        finally:
            if helper.returncode is None:
                helper.kill()
                await helper.wait()
        if helper.returncode:
            logger.debug("runsc %s: %s", " ".join(args), stderr.decode(errors="replace").strip())

    def _reap_dead_workers(self) -> None:
        """Delete the sandboxes and state dirs of backends whose process has died."""
        for entry, pid in dead_worker_dirs(self.root):
            logger.warning("deleting the sandboxes and state that dead worker process %d left in %s", pid, entry)
            self._remove_worker_dir(entry)

    def _remove_worker_dir(self, directory: Path) -> None:
        state = directory / "runsc"
        if state.is_dir():
            listed = self._runsc_blocking(state, "list", "--quiet")
            containers = listed.stdout.split()
            if containers:
                deleted = self._runsc_blocking(state, "delete", "--force", *containers)
                if deleted.returncode:
                    logger.warning("cannot delete sandboxes %s: %s", containers, deleted.stderr.strip())
        shutil.rmtree(directory, ignore_errors=True)

    def _runsc_blocking(self, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self._runsc, "--root", str(state), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_CLIENT_ENV,
            timeout=_RUNSC_HELPER_SECONDS,
            check=False,
        )


@dataclass(slots=True)
class _Warm:
    """A sandbox started ahead of its call, its launcher waiting on stdin."""

    container: str
    tool: Tool
    nonce: bytes | None
    """The nonce of its report; None for a served sandbox, whose calls each bring their own."""
    calls: int = 0
    """Calls it has served (a reused sandbox)."""


@dataclass(frozen=True, slots=True)
class _Served:
    """What the served sandboxes of a pool start with (init.c's --serve): part of the pool's key, so that a
    sandbox only ever serves calls of the same tool."""

    command: tuple[str, ...]
    """The tool each sandbox prestarts; empty: the tool is started when its call comes."""
    files: tuple[tuple[str, str], ...]
    """The tool's files, written into /work before each call."""
    reuse: bool
    """Whether a sandbox serves more than one call."""


@dataclass(slots=True)
class _Pool:
    """The warm sandboxes of one pool, and the task that keeps them topped up."""

    served: _Served | None
    """How its sandboxes serve their calls; None: each waits for one call of the ordinary protocol."""
    ready: list[_Warm] = field(default_factory=list)
    size: int = 0
    """How many to keep ready (the last call's wish)."""
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a sandbox is taken or the backend closes: the keeper has something to do."""
    last_used: float = 0.0
    keeper: asyncio.Future[None] | None = None
    busy: int = 0
    """Calls running in its served sandboxes: a reused sandbox comes back after its call."""


def _field(data: bytes) -> bytes:
    """One field as init.c reads it: a 4-byte big-endian length, then the bytes."""
    return len(data).to_bytes(4, "big") + data


def _checked(call: SandboxCall, tool: Tool, outcome: Outcome, reported: bool) -> Outcome:
    """`outcome`, or SandboxError if the tool could not start; a sandbox that ended on a signal without its
    init's report (`reported`) was killed by its memory cgroup (runsc reports signal N as 128 + N, as a shell
    does)."""
    if _start_failed(outcome):
        raise SandboxError(
            f"call {call.call_id}: cannot start {call.command[0]!r} in the sandbox: {outcome.stderr_tail.strip()}"
        )
    if reported or outcome.exit_code is None or not 128 < outcome.exit_code < 128 + signal.NSIG:
        return outcome
    # The `runsc run` client reaps the sandbox and its gofer: its rusage is the sandbox's use of the host.
    used = tool.rusage.ru_utime + tool.rusage.ru_stime if tool.rusage else None
    return at_memory_limit(dataclasses.replace(outcome, exit_code=128 - outcome.exit_code), call.limits, used)


def _start_failed(outcome: Outcome) -> bool:
    """Whether `runsc run`, or the sandbox's init, could not start the tool at all."""
    if launcher_failed(outcome):
        return True
    return outcome.exit_code == _START_FAILED and outcome.stderr_tail.startswith(_START_FAILED_PREFIX)


def _write_bundle(bundle: Path, config: dict[str, Any], files: Mapping[str, str]) -> None:
    bundle.mkdir(mode=0o700)
    (bundle / "work").mkdir()
    _write_work(bundle / "work", files)
    (bundle / "config.json").write_text(json.dumps(config))


def _write_work(work: Path, files: Mapping[str, str]) -> None:
    """Write the call's files into its scratch dir, all owned by the tool's user like the dir itself."""
    write_files(work, files)
    for path in (work, *work.rglob("*")):
        os.lchown(path, TOOL_UID, TOOL_UID)


def _default_root() -> Path:
    if os.geteuid() == 0:
        return Path("/var/run/agentflow/runsc")
    return Path(tempfile.gettempdir()) / f"agentflow-runsc-{os.geteuid()}"


_INIT_SOURCE = Path(__file__).with_name("init.c")
_INIT_IN_SANDBOX = "/agentflow-init"
_PRELOAD = (
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libm.so.6",
    "/usr/lib/x86_64-linux-gnu/libz.so.1",
    "/usr/lib/x86_64-linux-gnu/libexpat.so.1",
    "/usr/bin/python3",
)


def _install_init(rootfs: Path) -> tuple[str, ...]:
    """The argv of the sandboxes' init: init.c built into the rootfs with the machine's C compiler (about
    0.2 s), or _child.py's Python where none can build it."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        logger.info("no C compiler: sandboxes start with the Python init (about 45 ms slower to boot)")
        return LAUNCHER
    built = rootfs / _INIT_IN_SANDBOX.lstrip("/")
    compiled = subprocess.run(
        [compiler, "-O2", "-static", "-o", str(built), str(_INIT_SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if compiled.returncode:
        logger.warning("cannot build the sandboxes' init, using the Python one: %s", compiled.stderr.strip())
        return LAUNCHER
    built.chmod(0o755)
    return (_INIT_IN_SANDBOX,)


def _build_rootfs(rootfs: Path) -> None:
    """The read-only root shared by this backend's sandboxes: mount points, symlinks and a minimal /etc."""
    for mount_point in ("usr", "work", "tmp", "proc", "dev", "sys", "etc"):
        (rootfs / mount_point).mkdir(parents=True)
    for merged in ("bin", "lib", "lib64", "sbin"):
        (rootfs / merged).symlink_to(f"usr/{merged}")
    # Just enough for tools that look up users or resolve localhost; nothing of the host's /etc.
    etc = rootfs / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/work:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost\n")
    for path in (rootfs, *rootfs.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def _container_id(call_id: str) -> str:
    """A container id runsc accepts, recognisable by its call and unique even when a call is retried."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "-", call_id)[:48]
    return f"af-{readable}-{secrets.token_hex(4)}"


def _rlimit(kind: str, value: int) -> dict[str, Any]:
    return {"type": kind, "hard": value, "soft": value}
