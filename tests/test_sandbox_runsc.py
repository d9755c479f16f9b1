"""The runsc backend runs each tool in a fresh gVisor sandbox under limits, and leaves nothing behind.

Against the real runsc (the Makefile installs it); the tests run as root, which runsc needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import msgspec
import pytest

from bus.messages import Task, ToolRuntime
from sandbox import Limits, RunscBackend, SandboxCall, SandboxError, SandboxSettings, open_backend
from sandbox.gvisor import TOOL_UID
from tests.sandbox_probes import python, reach_host_loopback, try_writing
from worker.execute import Executor
from worker.settings import load as load_worker_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="af-runsc-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
async def backend(root: Path) -> AsyncIterator[RunscBackend]:
    opened = RunscBackend(root)
    yield opened
    await opened.close()


def containers(state: Path) -> list[str]:
    listed = subprocess.run(["runsc", "--root", str(state), "list", "--quiet"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    return listed.stdout.split()


async def sandboxes(state: Path) -> list[str]:
    return await asyncio.to_thread(containers, state)


async def entries(directory: Path) -> list[str]:
    return sorted(path.name for path in await asyncio.to_thread(lambda: list(directory.iterdir())))


async def exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


def processes_naming(text: str) -> list[int]:
    """Pids of the processes whose command line mentions `text` (a container id: its runsc client, sandbox
    and gofer all carry it or its bundle path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return found


async def eventually(condition: Callable[[], bool], seconds: float = 5) -> bool:
    """Whether `condition` comes true within `seconds`; it is checked off the event loop."""
    deadline = time.monotonic() + seconds
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def assert_unharmed(backend: RunscBackend) -> None:
    """The backend still runs a plain call, and nothing of earlier calls is left in its state."""
    outcome = await backend.run(python("print('still here')"))
    assert (outcome.exit_code, outcome.stdout) == (0, b"still here\n")
    await backend.settled()
    assert await sandboxes(backend.state) == []
    assert await entries(backend.dir / "calls") == []


async def test_a_tool_runs_inside_gvisor(backend: RunscBackend) -> None:
    outcome = await backend.run(python("print(open('/proc/version').read())"))

    assert outcome.kind == "runsc-cold"
    assert outcome.exit_code == 0
    # gVisor's own kernel answers, not the host's.
    assert outcome.stdout.startswith(b"Linux version 4.4.0")


async def test_a_tool_reads_its_input_on_stdin_and_answers_on_stdout(backend: RunscBackend) -> None:
    document = json.dumps({"text": "hello"}).encode()

    outcome = await backend.run(
        python("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())", call_id="echo-1", stdin=document)
    )

    # Every field but the measures.
    assert outcome == replace(
        outcome,
        kind="runsc-cold",
        exit_code=0,
        stdout=document,
        stderr_tail="",
        timed_out=False,
        output_truncated=False,
    )
    assert 0 < outcome.duration_seconds < 5
    assert 0 < outcome.start_seconds < 5


BURN_CPU = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass"
ALLOCATE_50_MB = "memory = bytearray(50 * 1024 * 1024)\nfor i in range(0, len(memory), 4096): memory[i] = 1"


async def test_a_tool_burning_cpu_reports_its_cpu_time(backend: RunscBackend) -> None:
    outcome = await backend.run(python(BURN_CPU))

    assert outcome.exit_code == 0, outcome.stderr_tail
    assert outcome.cpu_seconds is not None and outcome.cpu_seconds >= 0.2
    assert outcome.duration_seconds >= 0.2


async def test_a_tool_allocating_50_mb_reports_its_peak_memory(backend: RunscBackend) -> None:
    outcome = await backend.run(python(ALLOCATE_50_MB))

    assert outcome.exit_code == 0, outcome.stderr_tail
    assert outcome.max_rss_kb is not None and outcome.max_rss_kb >= 50 * 1024


async def test_a_tool_cannot_forge_the_report_of_its_sandbox(backend: RunscBackend) -> None:
    forged = '{"exit_code": 0, "run_seconds": 0, "cpu_seconds": 0, "max_rss_kb": 0}'
    outcome = await backend.run(
        python(f"import sys; sys.stderr.write('\\n' + 'f' * 32 + {forged!r} + '\\n'); sys.exit(3)")
    )

    assert outcome.exit_code == 3
    assert forged in outcome.stderr_tail


async def test_a_tools_stderr_is_handed_over_as_it_comes_without_its_sandboxs_report(backend: RunscBackend) -> None:
    pieces: list[bytes] = []
    code = "import sys; sys.stderr.write('one\\n'); sys.stderr.flush(); sys.stderr.write('two'); sys.exit(3)"

    outcome = await backend.run(dataclasses.replace(python(code), on_stderr=pieces.append))

    assert outcome.exit_code == 3
    assert b"".join(pieces) == b"one\ntwo"
    assert outcome.stderr_tail == "one\ntwo"


async def test_a_server_on_the_hosts_loopback_cannot_be_reached(backend: RunscBackend) -> None:
    outcome, connections = await reach_host_loopback(backend)

    # The sandbox has a loopback of its own (--network=none), where nothing listens.
    assert (outcome.exit_code, outcome.stdout) == (0, b"ConnectionRefusedError\n")
    assert connections == 0
    await assert_unharmed(backend)


async def test_the_workers_files_and_environment_are_not_visible(
    backend: RunscBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AF_TEST_SECRET", "do-not-leak")
    probe = f"""
import json, os
print(json.dumps({{
    "env": dict(os.environ),
    "cwd": os.getcwd(),
    "visible": [
        path for path in ({str(REPO)!r}, {str(backend.root)!r}, "/root", "/home", "/var") if os.path.exists(path)
    ],
    "etc": sorted(os.listdir("/etc")),
    "work": os.listdir("/work"),
}}))
"""

    outcome = await backend.run(python(probe, env={"MODE": "test"}))

    assert outcome.exit_code == 0, outcome.stderr_tail
    seen = json.loads(outcome.stdout)
    assert seen["env"] == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/work",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "MODE": "test",
    }
    assert seen["cwd"] == "/work"
    assert seen["visible"] == []
    assert seen["etc"] == ["group", "hosts", "passwd"]
    assert seen["work"] == []
    await assert_unharmed(backend)


async def test_the_root_is_read_only_and_only_work_and_tmp_are_writable(backend: RunscBackend) -> None:
    paths = ("/escape", "/usr/escape", "/etc/passwd", "/bin/escape", "/work/out.txt", "/tmp/out.txt")

    outcome, results, mounts = await try_writing(backend, *paths)

    assert outcome.exit_code == 0, outcome.stderr_tail
    assert results == {
        "/escape": "Permission denied",
        "/usr/escape": "Permission denied",
        "/etc/passwd": "Permission denied",
        "/bin/escape": "Permission denied",
        "/work/out.txt": "written",
        "/tmp/out.txt": "written",
    }
    # Not only file modes: the root and the host's /usr are mounted read-only.
    assert (mounts["/"], mounts["/usr"], mounts["/work"], mounts["/tmp"]) == ("ro", "ro", "rw", "rw")
    await assert_unharmed(backend)


async def test_a_fork_bomb_is_contained_by_the_process_limit(backend: RunscBackend) -> None:
    bomb = """
import os, time
started = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(2)
            os._exit(0)
        started += 1
except OSError as error:
    print(started, error.strerror)
"""

    outcome = await backend.run(python(bomb, limits=Limits(processes=32, wall_seconds=10)))

    # The sandbox's init and the tool itself are two of the 32 processes of their user in the sandbox.
    assert (outcome.exit_code, outcome.stdout) == (0, b"30 Resource temporarily unavailable\n")
    assert not outcome.timed_out
    await assert_unharmed(backend)


async def test_a_memory_bomb_is_killed_at_the_memory_limit(backend: RunscBackend) -> None:
    bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"

    outcome = await backend.run(python(bomb, limits=Limits(memory_mb=128, wall_seconds=10)))

    # The whole sandbox is killed at its cgroup's limit: runsc's 137, reported as SIGKILL like the process
    # backend reports a signal, and as the memory limit exceeded, with what the sandbox used of the host.
    assert outcome.exit_code == -signal.SIGKILL
    assert outcome.memory_exceeded
    assert outcome.max_rss_kb == 128 * 1024
    assert outcome.cpu_seconds is not None and outcome.cpu_seconds > 0
    assert not outcome.timed_out
    assert outcome.duration_seconds < 5
    await assert_unharmed(backend)


async def test_a_tool_killed_by_a_signal_inside_its_sandbox_is_no_memory_overrun(backend: RunscBackend) -> None:
    outcome = await backend.run(python("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))

    assert outcome.exit_code == -signal.SIGKILL
    assert not outcome.memory_exceeded
    assert outcome.cpu_seconds is not None and outcome.max_rss_kb is not None  # the init's own report


async def test_an_infinite_loop_is_killed_at_the_wall_limit(backend: RunscBackend) -> None:
    started = time.monotonic()

    outcome = await backend.run(python("while True: pass", limits=Limits(wall_seconds=1)))

    assert time.monotonic() - started < 4
    assert outcome.timed_out
    assert outcome.exit_code is None
    assert 1 <= outcome.duration_seconds < 2
    await assert_unharmed(backend)


async def test_100_mb_on_stdout_is_cut_at_the_output_cap(backend: RunscBackend) -> None:
    flood = "import sys\nfor _ in range(100):\n    sys.stdout.buffer.write(b'x' * 1_000_000)"

    outcome = await backend.run(python(flood, limits=Limits(output_bytes=1_000_000)))

    assert outcome.output_truncated
    assert outcome.stdout == b"x" * 1_000_000
    assert outcome.exit_code is None
    assert not outcome.timed_out
    await assert_unharmed(backend)


async def test_a_tool_that_ignores_sigterm_still_ends_at_the_wall_limit(backend: RunscBackend) -> None:
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"
    started = time.monotonic()

    outcome = await backend.run(python(stubborn, limits=Limits(wall_seconds=1)))

    assert time.monotonic() - started < 4
    assert outcome.timed_out
    assert outcome.exit_code is None
    await assert_unharmed(backend)


async def test_cancelling_a_call_kills_its_sandbox(backend: RunscBackend) -> None:
    running = asyncio.create_task(backend.run(python("import time; time.sleep(60)")))
    assert await eventually(lambda: len(containers(backend.state)) == 1)
    (container,) = await sandboxes(backend.state)
    assert await asyncio.to_thread(processes_naming, container)

    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert await sandboxes(backend.state) == []
    assert await eventually(lambda: not processes_naming(container))
    await assert_unharmed(backend)


async def test_files_are_written_into_work_which_is_wiped_after_the_call(backend: RunscBackend) -> None:
    call = SandboxCall(
        call_id="files-1",
        command=("python3", "main.py"),
        stdin=b"",
        files={
            "main.py": "import os\nprint(open('data/in.txt').read(), os.getcwd(), os.stat('data/in.txt').st_uid)",
            "data/in.txt": "héllo",
        },
    )

    outcome = await backend.run(call)

    assert outcome.exit_code == 0, outcome.stderr_tail
    assert outcome.stdout.decode().split() == ["héllo", "/work", str(TOOL_UID)]
    await backend.settled()
    assert await entries(backend.dir / "calls") == []


async def test_file_paths_that_leave_work_are_refused(backend: RunscBackend) -> None:
    with pytest.raises(SandboxError, match="must be relative"):
        await backend.run(python("pass", files={"../evil": "x"}))
    await assert_unharmed(backend)


async def test_a_command_that_does_not_exist_cannot_start(backend: RunscBackend) -> None:
    with pytest.raises(SandboxError, match="af-no-such-tool"):
        await backend.run(SandboxCall(call_id="test-1", command=("af-no-such-tool",), stdin=b""))
    await assert_unharmed(backend)


async def test_a_call_that_asks_for_egress_is_refused_with_the_reason(backend: RunscBackend) -> None:
    with pytest.raises(SandboxError, match="egress is not available on this machine"):
        await backend.run(python("pass", network="egress"))


async def test_the_runsc_backend_is_opened_by_name(tmp_path: Path) -> None:
    settings = load_worker_settings(env={"AF_SANDBOX": "runsc", "AF_RUNSC_ROOT": str(tmp_path)})

    opened = open_backend(settings.sandbox)
    try:
        outcome = await opened.run(python("print(1)"))
    finally:
        await opened.close()

    assert (opened.kind, outcome.kind, outcome.stdout) == ("runsc", "runsc-cold", b"1\n")
    assert await entries(tmp_path) == []


async def test_sandboxes_start_with_the_c_init_and_without_a_compiler_with_the_python_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runsc = shutil.which("runsc")
    assert runsc is not None
    with_compiler = RunscBackend(tmp_path / "cc")
    monkeypatch.setenv("PATH", str(tmp_path))  # no cc, gcc (nor runsc, given by path)
    without_compiler = RunscBackend(tmp_path / "python", runsc=runsc)
    probe = ALLOCATE_50_MB + "\nprint(open('/proc/1/cmdline').read().split(chr(0))[0])"
    try:
        outcomes = [await backend.run(python(probe)) for backend in (with_compiler, without_compiler)]
    finally:
        await with_compiler.close()
        await without_compiler.close()

    assert [o.stdout for o in outcomes] == [b"/agentflow-init\n", b"python3\n"]  # the sandbox's first process
    # Both report the same way: the tool's exit status and measures.
    assert [(o.exit_code, o.max_rss_kb is not None and o.max_rss_kb >= 50 * 1024) for o in outcomes] == [(0, True)] * 2
    assert (await exists(with_compiler.dir), await exists(without_compiler.dir)) == (False, False)


def test_without_runsc_opening_the_backend_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(SandboxError, match="apt-get install runsc"):
        open_backend(SandboxSettings(backend="runsc"))


CRASHING_WORKER = """
import asyncio, sys
from sandbox import RunscBackend, SandboxCall

async def main():
    backend = RunscBackend(sys.argv[1])
    print(backend.dir, flush=True)
    await backend.run(SandboxCall(call_id="orphan", command=("sleep", "60"), stdin=b""))

asyncio.run(main())
"""


async def test_a_new_backend_deletes_what_a_crashed_worker_left(backend: RunscBackend, root: Path) -> None:
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_WORKER, str(root), cwd=REPO, stdout=subprocess.PIPE
    )
    assert worker.stdout is not None
    left = Path((await worker.stdout.readline()).decode().strip())
    assert await eventually(lambda: len(containers(left / "runsc")) == 1)
    (orphan,) = await sandboxes(left / "runsc")
    worker.kill()
    await worker.wait()
    assert await exists(left)
    assert await sandboxes(left / "runsc") == [orphan]  # stopped, but still there for runsc

    successor = RunscBackend(root)
    try:
        assert not await exists(left)
        assert await eventually(lambda: not processes_naming(orphan))
        assert await exists(backend.dir)  # a live worker's state is left alone
    finally:
        await successor.close()
    await assert_unharmed(backend)


WARM_PROBE = """
import json, os, sys
print(json.dumps({
    "kernel": open("/proc/version").read()[:19],
    "stdin": sys.stdin.read(),
    "env": dict(os.environ),
    "uid": os.getuid(),
    "cwd": os.getcwd(),
    "work": sorted(os.listdir("/work")),
    "tmp": os.listdir("/tmp"),
    "file": open("in.txt").read(),
}))
open("/tmp/left-by-a-call", "w").write("x")
open("/work/left-by-a-call", "w").write("x")
"""


DEFAULT_LIMITS = Limits()


def pool_of(limits: Limits = DEFAULT_LIMITS, pool: str = "") -> SandboxCall:
    """A call standing for the calls of one pool and limits."""
    return SandboxCall(call_id="probe", command=("true",), stdin=b"", limits=limits, pool=pool)


async def warm_ready(backend: RunscBackend, limits: Limits = DEFAULT_LIMITS) -> str:
    """The id of the one warm sandbox for `limits`, once the pool's keeper has started it."""
    assert await eventually(lambda: len(backend.warm_containers(pool_of(limits))) == 1)
    (container,) = backend.warm_containers(pool_of(limits))
    return container


async def test_a_warm_sandbox_serves_one_call_with_its_own_input_and_is_then_deleted(tmp_path: Path) -> None:
    backend = RunscBackend(tmp_path, warm=1)
    try:
        call = python(WARM_PROBE, stdin=b"the input", env={"MODE": "warm"}, files={"in.txt": "héllo"})
        cold = await backend.run(call)  # no pool yet: cold, and it starts the pool of the default limits
        seen = []
        for _ in range(2):
            warm = await warm_ready(backend)
            outcome = await backend.run(call)
            assert (outcome.kind, outcome.exit_code) == ("runsc-warm", 0), outcome.stderr_tail
            await backend.settled()
            assert warm not in await sandboxes(backend.state)
            seen.append(json.loads(outcome.stdout))
    finally:
        await backend.close()

    assert cold.exit_code == 0, cold.stderr_tail
    # Each call, cold or warm, sees its own input in a fresh sandbox: nothing the previous call left.
    assert seen == [json.loads(cold.stdout)] * 2
    assert seen[0] == {
        "kernel": "Linux version 4.4.0",
        "stdin": "the input",
        "env": {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/work",
            "TMPDIR": "/tmp",
            "LANG": "C.UTF-8",
            "MODE": "warm",
        },
        "uid": TOOL_UID,
        "cwd": "/work",
        "work": ["in.txt"],
        "tmp": [],
        "file": "héllo",
    }
    assert await entries(tmp_path) == []


async def test_a_warm_sandbox_hands_over_its_tools_stderr_too(tmp_path: Path) -> None:
    backend = RunscBackend(tmp_path, warm=1)
    pieces: list[bytes] = []
    try:
        code = "import sys; sys.stderr.write('one\\n'); sys.stderr.flush(); sys.stderr.write('two')"
        await backend.run(python(code))  # cold: it starts the pool
        await warm_ready(backend)
        outcome = await backend.run(python(code, on_stderr=pieces.append))
    finally:
        await backend.close()

    assert (outcome.kind, outcome.exit_code) == ("runsc-warm", 0), outcome.stderr_tail
    assert b"".join(pieces) == b"one\ntwo"


async def test_a_warm_sandbox_enforces_the_limits_of_its_pool(tmp_path: Path) -> None:
    limits = Limits(wall_seconds=1, memory_mb=128)
    backend = RunscBackend(tmp_path, warm=1)
    try:
        await backend.run(python("pass", limits=limits))
        await warm_ready(backend, limits)
        looping = await backend.run(python("while True: pass", limits=limits))
        await warm_ready(backend, limits)
        bomb = await backend.run(python("chunks = []\nwhile True: chunks.append(bytearray(1 << 24))", limits=limits))
        await warm_ready(backend, limits)
        with pytest.raises(SandboxError, match="af-no-such-tool"):
            await backend.run(SandboxCall(call_id="test-1", command=("af-no-such-tool",), stdin=b"", limits=limits))
        await warm_ready(backend, limits)
        still = await backend.run(python("print('still here')", limits=limits))
        await backend.settled()
        # Only the replacement warm sandbox is left, once runsc has registered it.
        assert await eventually(lambda: containers(backend.state) == backend.warm_containers(pool_of(limits)))
    finally:
        await backend.close()

    assert (looping.timed_out, looping.exit_code) == (True, None)
    assert 1 <= looping.duration_seconds < 2
    assert (bomb.timed_out, bomb.exit_code, bomb.memory_exceeded) == (False, -signal.SIGKILL, True)
    assert not looping.memory_exceeded and not still.memory_exceeded
    assert (still.exit_code, still.stdout) == (0, b"still here\n")
    assert await entries(tmp_path) == []


async def test_a_pool_without_calls_is_dropped_after_its_idle_time(tmp_path: Path) -> None:
    backend = RunscBackend(tmp_path, warm=1, idle_seconds=2)
    try:
        await backend.run(python("pass"))
        await warm_ready(backend)

        assert await eventually(lambda: backend.warm_containers(pool_of()) == [] and containers(backend.state) == [])
        assert (await backend.run(python("print(1)"))).stdout == b"1\n"  # cold again, and it restarts the pool
        await warm_ready(backend)
    finally:
        await backend.close()
    assert await entries(tmp_path) == []


async def test_after_close_no_sandbox_and_no_state_dir_is_left(backend: RunscBackend, root: Path) -> None:
    await backend.run(python("while True: pass", limits=Limits(wall_seconds=0.5)))
    assert await sandboxes(backend.state) == []

    await backend.close()

    assert await entries(root) == []
    assert not await asyncio.to_thread(processes_naming, str(root))


async def test_each_tool_version_keeps_the_warm_sandboxes_it_asks_for_in_a_pool_of_its_own(tmp_path: Path) -> None:
    backend = RunscBackend(tmp_path, warm=0)
    try:
        asks_two = python("print(2)", pool="acme/summarize@1", warm=2)
        asks_none = python("print(0)", pool="acme/other@1")
        assert (await backend.run(asks_two)).kind == "runsc-cold"  # the first call starts its pool
        assert (await backend.run(asks_none)).kind == "runsc-cold"
        assert await eventually(lambda: len(backend.warm_containers(asks_two)) == 2)
        assert (await backend.run(asks_two)).kind == "runsc-warm"
        assert await eventually(lambda: len(backend.warm_containers(asks_two)) == 2)
        # Same limits, another tool: no pool, since it asks for none and the backend keeps none by default.
        assert backend.warm_containers(asks_none) == []
        assert (await backend.run(asks_none)).kind == "runsc-cold"
    finally:
        await backend.close()
    assert await entries(tmp_path) == []


async def ready_for(backend: RunscBackend, call: SandboxCall, count: int = 1) -> list[str]:
    """The ids of the `count` sandboxes ready for `call`, once its pool has them."""
    assert await eventually(lambda: len(backend.warm_containers(call)) == count, seconds=30)
    return backend.warm_containers(call)


PRESTART_PROBE = """
import json, os, sys
document = json.load(sys.stdin)
print(json.dumps({"input": document, "env": dict(os.environ), "work": sorted(os.listdir("/work"))}))
"""


async def test_a_prestarted_tool_gets_each_calls_input_and_answers_it_but_no_per_call_environment(
    tmp_path: Path,
) -> None:
    backend = RunscBackend(tmp_path, warm=1)
    answers = []
    try:
        for number in range(3):
            call = python(
                PRESTART_PROBE,
                stdin=json.dumps({"n": number}).encode(),
                env={"AF_RUN_ID": "run-1"},
                files={"in.txt": "x"},
                prestart=True,
            )
            if number:  # the first call is cold and starts the pool; the others find their tool waiting
                await ready_for(backend, call)
            outcome = await backend.run(call)
            assert outcome.exit_code == 0, outcome.stderr_tail
            answers.append((outcome.kind, json.loads(outcome.stdout)))
        await backend.settled()
    finally:
        await backend.close()

    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
    assert answers == [
        (kind, {"input": {"n": number}, "env": base, "work": ["in.txt"]})
        for number, kind in enumerate(["runsc-cold", "runsc-warm", "runsc-warm"])
    ]
    assert await entries(tmp_path) == []


def noop_task(prestart: bool, run_id: str) -> Task:
    """A task of a tool that answers the per-call variables it sees, with a warm pool of one."""
    code = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith('AF_')}))"
    runtime = ToolRuntime(command=("python3", "-c", code), warm=1, prestart=prestart)
    return Task(
        tenant="acme", run_id=run_id, task_id=f"{run_id}-t", attempt=1, step="s", tool="env@1", runtime=runtime,
        input=msgspec.Raw(b"{}"),
    )  # fmt: skip


async def test_a_tool_that_asks_for_no_prestart_still_gets_its_per_call_environment_from_a_warm_sandbox(
    tmp_path: Path,
) -> None:
    backend = RunscBackend(tmp_path)
    executor = Executor(backend, "worker-1")
    results = {}
    try:
        for prestart in (False, True):
            await executor.execute(noop_task(prestart, "run-0"))  # cold: it starts the tool version's pool
            call = SandboxCall(call_id="probe", command=noop_task(prestart, "").runtime.command, stdin=b"")
            await ready_for(backend, dataclasses.replace(call, pool="acme/env@1", warm=1, prestart=prestart))
            results[prestart] = await executor.execute(noop_task(prestart, "run-1"))
    finally:
        await backend.close()

    # Older task messages, which carry no prestart, decode as prestarted.
    old = msgspec.json.encode(noop_task(True, "run-2")).replace(b',"prestart":false', b"")
    assert msgspec.json.decode(old, type=Task).runtime.prestart
    assert {
        prestart: (r.ok, r.sandbox, msgspec.json.decode(r.output or b"null")) for prestart, r in results.items()
    } == {
        False: (True, "runsc-warm", {"AF_RUN_ID": "run-1", "AF_TASK_ID": "run-1-t", "AF_ATTEMPT": "1"}),
        True: (True, "runsc-warm", {}),
    }


REUSE_PROBE = """
import json, os, subprocess, sys
tenant = sys.stdin.read().replace("/", "-")
seen = {"work": sorted(os.listdir("/work")), "tmp": sorted(os.listdir("/tmp")),
        "others": sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, os.getpid()))}
print(json.dumps(seen))
sys.stdout.flush()
# What a call leaves for the next: files in /work and /tmp, and a process that would write into its output.
for left in ("/work/left-by-" + tenant, "/tmp/left-by-" + tenant):
    open(left, "w").write(tenant)
subprocess.Popen(["sh", "-c", "sleep 1; echo leaked"], start_new_session=True)
"""


async def test_a_reused_sandbox_serves_only_its_tenant_and_tool_version_and_each_call_starts_clean(
    tmp_path: Path,
) -> None:
    backend = RunscBackend(tmp_path)
    calls = {
        pool: python(REUSE_PROBE, stdin=pool.encode(), pool=pool, files={"tool.txt": pool}, reuse=True, prestart=True)
        for pool in ("acme/probe@1", "beta/probe@1", "acme/probe@2")
    }
    served = []  # (pool, kind, the sandbox it went back to, what the tool saw)
    try:
        for pool in ("acme/probe@1", "acme/probe@1", "beta/probe@1", "acme/probe@2", "acme/probe@1"):
            outcome = await backend.run(calls[pool])
            assert outcome.exit_code == 0, outcome.stderr_tail
            (back,) = await ready_for(backend, calls[pool])
            served.append((pool, outcome.kind, back, json.loads(outcome.stdout)))
            await asyncio.sleep(1.5)  # time for the leftover process to write, were it alive
    finally:
        await backend.close()

    assert [(pool, kind) for pool, kind, _, _ in served] == [
        ("acme/probe@1", "runsc-cold"),
        ("acme/probe@1", "runsc-warm"),
        ("beta/probe@1", "runsc-cold"),  # another tenant: never acme's sandbox
        ("acme/probe@2", "runsc-cold"),  # another version: never version 1's
        ("acme/probe@1", "runsc-warm"),
    ]
    kept = [container for _, _, container, _ in served]
    assert kept[0] == kept[1] == kept[4] and len({kept[0], kept[2], kept[3]}) == 3
    # Each call found only its tool's files, an empty /tmp and no process of an earlier call.
    assert [seen for _, _, _, seen in served] == [{"work": ["tool.txt"], "tmp": [], "others": []}] * 5
    assert await entries(tmp_path) == []


CRASH_PROBE = """
import os, sys, time
order = sys.stdin.read()
if order == "crash":
    os.kill(os.getpid(), 11)
if order == "hang":
    time.sleep(60)
print(order)
"""


@pytest.mark.parametrize("reuse", [False, True], ids=["prestarted", "prestarted-and-reused"])
async def test_a_prestarted_tool_that_crashes_or_hangs_fails_only_its_own_call(tmp_path: Path, reuse: bool) -> None:
    backend = RunscBackend(tmp_path, warm=1)
    limits = Limits(wall_seconds=2)

    def call(order: str) -> SandboxCall:
        return python(CRASH_PROBE, stdin=order.encode(), limits=limits, prestart=True, reuse=reuse)

    outcomes = []
    try:
        for order in ("first", "crash", "after-crash", "hang", "after-hang"):
            if order != "first":
                await ready_for(backend, call(order))
            outcomes.append(await backend.run(call(order)))
        await backend.settled()
        assert await eventually(lambda: containers(backend.state) == backend.warm_containers(call("")))
    finally:
        await backend.close()

    first, crash, after_crash, hang, after_hang = outcomes
    assert (first.exit_code, first.stdout) == (0, b"first\n")
    assert (crash.kind, crash.exit_code, crash.memory_exceeded) == ("runsc-warm", -signal.SIGSEGV, False)
    assert (after_crash.kind, after_crash.exit_code, after_crash.stdout) == ("runsc-warm", 0, b"after-crash\n")
    assert (hang.timed_out, hang.exit_code) == (True, None)
    assert (after_hang.kind, after_hang.exit_code, after_hang.stdout) == ("runsc-warm", 0, b"after-hang\n")
    assert await entries(tmp_path) == []
