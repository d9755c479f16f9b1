"""The docker backend runs each tool in a fresh container under Docker Engine's gVisor runtime, under limits,
and leaves no container behind.

Against a real dockerd started by the `dockerd` fixture (the Makefile installs docker.io) whose runsc
runtime passes --network=none; the image is built locally at first use, no registry is needed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import docker
import pytest

from sandbox import Limits, SandboxCall, SandboxError, open_backend
from sandbox.docker import LABEL, DockerBackend
from tests.conftest import Dockerd
from tests.sandbox_probes import python, reach_host_loopback, try_writing
from worker.settings import load as load_worker_settings


@pytest.fixture(scope="module")
async def backend(dockerd: Dockerd) -> AsyncIterator[DockerBackend]:
    opened = DockerBackend(dockerd.url)
    yield opened
    await opened.close()


def containers(dockerd: Dockerd) -> list[str]:
    client = docker.DockerClient(base_url=dockerd.url)
    try:
        return [container.name for container in client.containers.list(all=True, filters={"label": LABEL})]
    finally:
        client.close()


async def test_a_tool_runs_inside_gvisor(backend: DockerBackend) -> None:
    outcome = await backend.run(python("print(open('/proc/version').read())"))

    assert (outcome.kind, outcome.exit_code) == ("docker", 0), outcome.stderr_tail
    # gVisor's own kernel answers, not the host's.
    assert outcome.stdout.startswith(b"Linux version 4.4.0")
    assert outcome.cpu_seconds is not None and outcome.max_rss_kb is not None


async def test_a_tool_gets_its_input_files_and_environment_and_nothing_of_the_workers(
    backend: DockerBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AF_TEST_SECRET", "do-not-leak")
    probe = """
import json, os, sys
print(json.dumps({
    "input": sys.stdin.read(),
    "file": open("data/in.txt").read(),
    "env": dict(os.environ),
    "uid": os.getuid(),
    "cwd": os.getcwd(),
}))
"""

    outcome = await backend.run(python(probe, stdin=b"the input", files={"data/in.txt": "héllo"}, env={"MODE": "t"}))

    assert outcome.exit_code == 0, outcome.stderr_tail
    seen = json.loads(outcome.stdout)
    assert (seen["input"], seen["file"], seen["uid"], seen["cwd"]) == ("the input", "héllo", 65534, "/work")
    assert seen["env"]["MODE"] == "t" and "AF_TEST_SECRET" not in seen["env"]


async def test_a_tools_stderr_is_handed_over_as_it_comes_without_its_sandboxs_report(backend: DockerBackend) -> None:
    pieces: list[bytes] = []
    code = "import sys; sys.stderr.write('one\\n'); sys.stderr.flush(); sys.stderr.write('two'); sys.exit(3)"

    outcome = await backend.run(python(code, on_stderr=pieces.append))

    assert outcome.exit_code == 3
    assert b"".join(pieces) == b"one\ntwo"


async def test_the_root_is_read_only_and_only_work_and_tmp_are_writable(backend: DockerBackend) -> None:
    _, results, mounts = await try_writing(backend, "/escape", "/usr/escape", "/work/out.txt", "/tmp/out.txt")

    assert results == {
        "/escape": "Permission denied",
        "/usr/escape": "Permission denied",
        "/work/out.txt": "written",
        "/tmp/out.txt": "written",
    }
    assert (mounts["/"], mounts["/usr"], mounts["/work"], mounts["/tmp"]) == ("ro", "ro", "rw", "rw")


async def test_a_server_on_the_hosts_loopback_cannot_be_reached(backend: DockerBackend) -> None:
    outcome, connections = await reach_host_loopback(backend)

    assert (outcome.exit_code, outcome.stdout) == (0, b"ConnectionRefusedError\n")
    assert connections == 0


async def test_a_memory_bomb_is_killed_at_the_memory_limit(backend: DockerBackend) -> None:
    bomb = "chunks = []\nwhile True: chunks.append(bytearray(1 << 24))"

    outcome = await backend.run(python(bomb, limits=Limits(memory_mb=128, wall_seconds=20)))

    assert outcome.exit_code == -9  # SIGKILL by the memory cgroup
    assert (outcome.memory_exceeded, outcome.max_rss_kb) == (True, 128 * 1024)
    assert not outcome.timed_out


async def test_an_infinite_loop_is_killed_at_the_wall_limit(backend: DockerBackend) -> None:
    outcome = await backend.run(python("while True: pass", limits=Limits(wall_seconds=1)))

    assert outcome.timed_out and outcome.exit_code is None
    assert 1 <= outcome.duration_seconds < 5


async def test_a_command_that_does_not_exist_cannot_start(backend: DockerBackend) -> None:
    with pytest.raises(SandboxError, match="af-no-such-tool"):
        await backend.run(SandboxCall(call_id="test-1", command=("af-no-such-tool",), stdin=b""))


async def test_a_call_that_asks_for_egress_is_refused_with_the_reason(backend: DockerBackend) -> None:
    with pytest.raises(SandboxError, match="--network=none"):
        await backend.run(python("pass", network="egress"))


def test_a_runtime_that_does_not_pass_network_none_is_refused(dockerd: Dockerd) -> None:
    with pytest.raises(SandboxError, match="does not pass --network=none"):
        DockerBackend(dockerd.url, runtime="runsc-with-network")


async def test_the_docker_backend_is_opened_by_name(dockerd: Dockerd) -> None:
    settings = load_worker_settings(env={"AF_SANDBOX": "docker", "AF_DOCKER_HOST": dockerd.url})
    opened = open_backend(settings.sandbox)
    try:
        outcome = await opened.run(python("print(1)"))
    finally:
        await opened.close()

    assert (opened.kind, outcome.kind, outcome.stdout) == ("docker", "docker", b"1\n")


async def test_no_container_is_left_after_the_calls(backend: DockerBackend, dockerd: Dockerd) -> None:
    await backend.run(python("print('last')"))
    cancelled = asyncio.ensure_future(backend.run(python("import time; time.sleep(30)")))
    await asyncio.sleep(2)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await backend.settled()

    assert await asyncio.to_thread(containers, dockerd) == []
