"""The Docker backend: each call runs in a fresh container of a Docker Engine whose gVisor runtime passes
--network=none."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import secrets
import signal
import socket
import tarfile
import time
from typing import Any

import docker
import docker.errors
from docker.types import Mount, Ulimit

from . import _child
from .files import check_paths
from .gvisor import LAUNCHER, SANDBOX_ENV, TOOL_UID, at_memory_limit, check_sandboxed_call, launcher_failed
from .output import Output, sandbox_outcome
from .protocol import Outcome, SandboxCall, SandboxError
from .settings import DOCKER_RUNTIME
from .workdirs import process_start_time

logger = logging.getLogger(__name__)

LABEL = "agentflow.sandbox"
"""Every container of this backend carries it; its value names the worker process that owns it."""
BASE_IMAGE = "agentflow/sandbox-base:1"
"""The image of tools that name none: mount points, merged-/usr symlinks and a minimal /etc; the host's /usr
is mounted into it read-only, as in the runsc backend. Built locally (`docker import`) at first use, so no
registry is needed."""
_RUNTIME_HINT = (
    "add to the engine's daemon.json a runtime such as "
    '{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}}'
)
_TMP_MB = 64
_WORK_MB = 256
_NOFILE = 1024
# After a kill or the init's exit, how long the output may take to arrive, and the container to stop.
_DRAIN_SECONDS = 5.0
_FRAME_HEADER = 8  # the attach stream without a tty: 1 byte stream, 3 zero bytes, 4 bytes big-endian size


class DockerBackend:
    """Runs each call in its own container under Docker Engine's gVisor runtime, removed after the call.

    Per call: the tool's image (or BASE_IMAGE with the host's /usr read-only), a read-only root, /work and /tmp
    small tmpfs, the tool as nobody with no capabilities and no-new-privileges, network mode none on a runtime
    whose runsc runs with --network=none (checked at start). Limits: memory (and swap) and one CPU through the
    container's cgroup, processes (RLIMIT_NPROC, which gVisor's kernel enforces per sandbox), CPU time, file
    size, open files and core dumps as ulimits, the wall limit and the output cap by `docker kill`. As in
    the runsc backend the container's init is _child's launcher: the call, its environment and files travel
    on stdin, never in the container's configuration, and the launcher reports the tool's exit status and
    measures under a nonce.

    Containers carry LABEL=<host>/<pid>/<start time> of their worker; a new backend removes those of dead
    workers on this host, each call removes its own, and close() whatever of its own is left.

    The docker client blocks, so every call to it runs in a thread.
    """

    kind: str = "docker"

    def __init__(self, base_url: str | None = None, runtime: str = DOCKER_RUNTIME) -> None:
        """Connect to the engine at `base_url` (SandboxSettings.docker_host; None: the Docker client's own
        DOCKER_HOST, else its default socket) and check that its `runtime` (SandboxSettings.docker_runtime)
        passes --network=none; SandboxError saying what is missing. Blocking: it removes dead workers'
        containers, so open the backend before serving calls."""
        self._runtime = runtime
        try:
            self._client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
            runtimes: dict[str, Any] = self._client.info().get("Runtimes") or {}
        except docker.errors.DockerException as error:
            raise SandboxError(
                f"the docker sandbox backend cannot reach a Docker Engine ({base_url or 'DOCKER_HOST'}): {error}"
            ) from error
        declared = runtimes.get(self._runtime)
        if declared is None:
            raise SandboxError(f"the Docker Engine has no runtime {self._runtime!r}: {_RUNTIME_HINT}")
        if "--network=none" not in (declared.get("runtimeArgs") or []):
            raise SandboxError(
                f"the Docker Engine's runtime {self._runtime!r} does not pass --network=none to runsc (the only "
                f"network mode that works on this machine): {_RUNTIME_HINT}"
            )
        self.owner = f"{socket.gethostname()}/{os.getpid()}/{process_start_time(os.getpid())}"
        """This backend's value of LABEL."""
        self._image_lock = asyncio.Lock()
        self._image_ready = False
        self._cleanups: set[asyncio.Future[None]] = set()
        self._closed = False
        self._remove_dead_workers_containers()

    async def run(self, call: SandboxCall) -> Outcome:
        """Run one call in a container of its own; SandboxError if it cannot start."""
        arrived = time.monotonic()
        check_sandboxed_call(call, "docker", self._closed)
        files = {str(path): content for path, content in check_paths(call.files)}
        image = call.image or await self._base_image()
        container = await self._create(call, image)
        try:
            outcome = await self._exchange(call, container, files, arrived)
        finally:
            # Shielded and remembered, so that a second cancel leaves no container behind and close() waits.
            task = asyncio.ensure_future(self._remove(container))
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            await asyncio.shield(task)
        if launcher_failed(outcome):
            raise SandboxError(
                f"call {call.call_id}: cannot start {call.command[0]!r} in the sandbox: {outcome.stderr_tail.strip()}"
            )
        return outcome

    def warm_containers(self, call: SandboxCall) -> list[str]:
        """None: every call gets a container created for it."""
        return []

    async def settled(self) -> None:
        """Wait until the containers of finished calls are removed."""
        while self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)

    async def close(self) -> None:
        """Remove every container this backend still has."""
        self._closed = True
        await self.settled()
        await asyncio.to_thread(self._remove_containers, self.owner)
        await asyncio.to_thread(self._client.close)

    async def _create(self, call: SandboxCall, image: str) -> str:
        """Create the call's container; its id. The low-level API: the high-level one sets no StdinOnce."""
        limits = call.limits
        memory = limits.memory_mb * 1_048_576
        api = self._client.api
        host_config = api.create_host_config(
            network_mode="none",
            runtime=self._runtime,
            read_only=True,
            tmpfs={"/work": f"size={_WORK_MB}m,mode=1777", "/tmp": f"size={_TMP_MB}m,mode=1777"},
            mounts=[] if call.image else [Mount("/usr", "/usr", type="bind", read_only=True)],
            mem_limit=memory,
            memswap_limit=memory,
            nano_cpus=1_000_000_000,
            ulimits=[
                Ulimit(name="nofile", soft=_NOFILE, hard=_NOFILE),
                Ulimit(name="fsize", soft=limits.file_bytes, hard=limits.file_bytes),
                Ulimit(name="core", soft=0, hard=0),
                Ulimit(name="nproc", soft=limits.processes, hard=limits.processes),
                Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds),
            ],
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
        )
        try:
            created = await asyncio.to_thread(
                api.create_container,
                image,
                command=list(LAUNCHER),
                user=f"{TOOL_UID}:{TOOL_UID}",
                working_dir="/work",
                environment=SANDBOX_ENV,
                hostname="sandbox",
                stdin_open=True,  # not detached: with StdinOnce, so that closing our stdin ends the tool's
                labels={LABEL: self.owner, "agentflow.call": call.call_id},
                host_config=host_config,
            )
        except docker.errors.DockerException as error:
            raise SandboxError(f"call {call.call_id}: cannot create its container from {image!r}: {error}") from error
        return str(created["Id"])

    async def _exchange(self, call: SandboxCall, container: str, files: dict[str, str], arrived: float) -> Outcome:
        """Attach, start, send the call and collect the output until the container's streams end."""
        nonce = secrets.token_hex(16)
        try:
            attached = await asyncio.to_thread(
                self._client.api.attach_socket, container, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
            )
            raw: socket.socket = attached._sock  # the hijacked HTTP connection, a plain socket
            raw.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=raw)
            await asyncio.to_thread(self._client.api.start, container)
        except docker.errors.DockerException as error:
            raise SandboxError(f"call {call.call_id}: cannot start its container: {error}") from error
        output = Output(call.limits.output_bytes, nonce.encode())
        output.on_stderr = call.on_stderr
        started = time.monotonic()
        timed_out = False
        try:
            request = _child.request(nonce, list(call.command), {**SANDBOX_ENV, **call.env}, files)
            writer.write(request + call.stdin)
            await writer.drain()
            writer.write_eof()  # with stdin_once, the container's stdin ends here
            reading = asyncio.ensure_future(_demultiplex(reader, output))
            try:
                async with asyncio.timeout(call.limits.wall_seconds):
                    await asyncio.wait([reading, output.overflowed], return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                timed_out = True
            ended = time.monotonic()
            if not reading.done():  # past the wall limit or the output cap
                await self._kill(container)
            await asyncio.wait([reading], timeout=_DRAIN_SECONDS)
            reading.cancel()
        except BaseException:
            await asyncio.shield(self._kill(container))
            raise
        finally:
            writer.close()
        killed_by_us = timed_out or output.output_truncated
        report = output.reported.result() if output.reported.done() and not killed_by_us else None
        exit_code = None if killed_by_us else report["exit_code"] if report else await self._exit_code(container)
        run_seconds = float(report["run_seconds"]) if report else ended - started
        outcome = sandbox_outcome(
            self.kind, output, exit_code, timed_out, report, run_seconds, ended - arrived - run_seconds
        )
        return outcome if report else at_memory_limit(outcome, call.limits, None)

    async def _exit_code(self, container: str) -> int | None:
        """The container's exit status when its init did not report (the sandbox was killed), as minus the
        signal number where runsc reports 128 + N (SIGKILL at the memory limit included)."""
        try:
            status = await asyncio.to_thread(self._client.api.wait, container, timeout=_DRAIN_SECONDS)
        except (docker.errors.DockerException, OSError) as error:
            logger.warning("cannot read the exit status of container %s: %s", container, error)
            return None
        code = int(status.get("StatusCode", -1))
        return 128 - code if 128 < code < 128 + signal.NSIG else code

    async def _kill(self, container: str) -> None:
        try:
            await asyncio.to_thread(self._client.api.kill, container)
        except docker.errors.DockerException as error:
            logger.debug("docker kill %s: %s", container, error)  # it has exited meanwhile

    async def _remove(self, container: str) -> None:
        try:
            await asyncio.to_thread(self._client.api.remove_container, container, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as error:
            # Not raised: the caller is cleaning up, and close() or the next worker removes it by its label.
            logger.warning("cannot remove container %s: %s", container, error)

    async def _base_image(self) -> str:
        async with self._image_lock:
            if not self._image_ready:
                await asyncio.to_thread(self._import_base_image)
                self._image_ready = True
        return BASE_IMAGE

    def _import_base_image(self) -> None:
        try:
            self._client.images.get(BASE_IMAGE)
            return
        except docker.errors.ImageNotFound:
            pass
        logger.info("building the sandbox image %s from a skeleton root (docker import)", BASE_IMAGE)
        repository, tag = BASE_IMAGE.rsplit(":", 1)
        self._client.api.import_image_from_data(_skeleton_root(), repository=repository, tag=tag)

    def _remove_dead_workers_containers(self) -> None:
        host = socket.gethostname()
        owners = set()
        for container in self._client.containers.list(all=True, filters={"label": LABEL}):
            owners.add(container.labels.get(LABEL, ""))
        for owner in owners:
            owner_host, _, rest = owner.partition("/")
            pid, _, started = rest.partition("/")
            if owner_host == host and pid.isdigit() and str(process_start_time(int(pid))) != started:
                logger.warning("removing the containers that dead worker process %s left", pid)
                self._remove_containers(owner)

    def _remove_containers(self, owner: str) -> None:
        for container in self._client.containers.list(all=True, filters={"label": f"{LABEL}={owner}"}):
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)


async def _demultiplex(reader: asyncio.StreamReader, output: Output) -> None:
    """Hand the frames of an attach stream to `output` until the stream ends."""
    while True:
        try:
            header = await reader.readexactly(_FRAME_HEADER)
            payload = await reader.readexactly(int.from_bytes(header[4:], "big"))
        except asyncio.IncompleteReadError:
            return
        output.data_received(header[0], payload)


def _skeleton_root() -> bytes:
    """A tar of BASE_IMAGE's root: mount points, the merged-/usr symlinks and a minimal /etc."""
    etc = {
        "passwd": "root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/work:/usr/sbin/nologin\n",
        "group": "root:x:0:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for directory in ("usr", "work", "tmp", "proc", "dev", "sys", "etc"):
            entry = tarfile.TarInfo(directory)
            entry.type, entry.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(entry)
        for merged in ("bin", "lib", "lib64", "sbin"):
            entry = tarfile.TarInfo(merged)
            entry.type, entry.linkname = tarfile.SYMTYPE, f"usr/{merged}"
            archive.addfile(entry)
        for name, text in etc.items():
            data = text.encode()
            entry = tarfile.TarInfo(f"etc/{name}")
            entry.size, entry.mode = len(data), 0o644
            archive.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()
