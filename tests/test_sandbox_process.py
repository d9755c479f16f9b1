"""The process backend runs a tool as a child process under limits, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from sandbox import Limits, Outcome, ProcessBackend, SandboxCall, SandboxError, SandboxSettings, open_backend
from sandbox.output import Output

NONCE = b"0123456789abcdef0123456789abcdef"
REPORT = b'{"exit_code": 0, "run_seconds": 0.1, "cpu_seconds": 0.05, "max_rss_kb": 4096}'


@pytest.fixture
async def backend() -> AsyncIterator[ProcessBackend]:
    opened = ProcessBackend()
    yield opened
    await opened.close()


def python(code: str) -> SandboxCall:
    """A call that runs `code` with the test's interpreter (the scrubbed PATH may not reach pyenv's)."""
    return SandboxCall(call_id="test-1", command=(sys.executable, "-c", code), stdin=b"")


def shell(script: str) -> SandboxCall:
    return SandboxCall(call_id="test-1", command=("/bin/sh", "-c", script), stdin=b"")


def is_running(pid: int) -> bool:
    """Whether `pid` is a live process; a zombie waiting for a reaper that is not us does not count."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def eventually(condition: Callable[[], bool]) -> bool:
    """Whether `condition` comes true within 3 seconds; it is checked off the event loop."""
    deadline = time.monotonic() + 3
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def all_gone(*pids: int) -> bool:
    return await eventually(lambda: not any(map(is_running, pids)))


async def test_a_tool_reads_its_input_on_stdin_and_answers_on_stdout(backend: ProcessBackend) -> None:
    document = json.dumps({"text": "hello"}).encode()
    call = SandboxCall(
        call_id="echo-1",
        command=(sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"),
        stdin=document,
    )

    outcome = await backend.run(call)

    assert outcome == Outcome(
        kind="process",
        exit_code=0,
        stdout=document,
        stderr_tail="",
        timed_out=False,
        output_truncated=False,
        duration_seconds=outcome.duration_seconds,
        cpu_seconds=outcome.cpu_seconds,
        max_rss_kb=outcome.max_rss_kb,
        start_seconds=outcome.start_seconds,
    )
    assert 0 < outcome.duration_seconds < 5
    assert 0 <= outcome.start_seconds < 1


BURN_CPU = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 0.3: pass"
ALLOCATE_50_MB = "memory = bytearray(50 * 1024 * 1024)\nfor i in range(0, len(memory), 4096): memory[i] = 1"


async def test_the_cpu_time_and_peak_memory_of_a_call_are_measured(backend: ProcessBackend) -> None:
    burner = await backend.run(SandboxCall(call_id="cpu-1", command=(sys.executable, "-c", BURN_CPU), stdin=b""))
    allocator = await backend.run(
        SandboxCall(call_id="mem-1", command=(sys.executable, "-c", ALLOCATE_50_MB), stdin=b"")
    )

    assert burner.cpu_seconds is not None and burner.cpu_seconds >= 0.2
    assert allocator.max_rss_kb is not None and allocator.max_rss_kb >= 50 * 1024


async def test_a_failing_tool_reports_its_exit_code_and_the_tail_of_its_stderr(
    backend: ProcessBackend,
) -> None:
    outcome = await backend.run(python("import sys; sys.stderr.write('noise ' * 5000 + 'the reason'); sys.exit(5)"))

    assert outcome.exit_code == 5
    assert outcome.stderr_tail.endswith("noise the reason")
    assert not outcome.memory_exceeded
    assert len(outcome.stderr_tail.encode()) == 4096


async def test_a_tool_that_does_not_read_its_input_is_no_error(backend: ProcessBackend) -> None:
    call = SandboxCall(call_id="test-1", command=("/bin/true",), stdin=b"x" * 1_000_000)

    outcome = await backend.run(call)

    assert outcome.exit_code == 0


async def test_a_tool_that_runs_past_its_wall_limit_is_killed_with_its_children(
    backend: ProcessBackend,
) -> None:
    started = time.monotonic()
    outcome = await backend.run(replace(shell("sleep 30 & echo $!; wait"), limits=Limits(wall_seconds=0.5)))

    assert time.monotonic() - started < 3
    assert outcome.timed_out
    assert outcome.exit_code is None
    assert await all_gone(int(outcome.stdout))


async def test_processes_a_tool_leaves_behind_are_killed_when_it_exits(backend: ProcessBackend) -> None:
    started = time.monotonic()
    outcome = await backend.run(shell("sleep 30 & echo $!"))

    assert time.monotonic() - started < 3
    assert outcome.exit_code == 0
    assert not outcome.timed_out
    assert await all_gone(int(outcome.stdout))


async def test_calls_after_one_whose_pipes_a_runaway_descendant_held_still_get_their_output(
    backend: ProcessBackend,
) -> None:
    # The descendant leaves the tool's session, so it outlives the kill and holds the pipes until they are
    # closed from our side; the next calls' pipes then take the same file descriptor numbers.
    runaway = "import subprocess; subprocess.Popen(['sleep', '4'], start_new_session=True); print('held')"
    held = await backend.run(python(runaway))
    assert held.stdout == b"held\n"
    for n in range(5):
        outcome = await backend.run(python(f"print({n})"))
        assert (outcome.exit_code, outcome.stdout, outcome.timed_out) == (0, f"{n}\n".encode(), False)


async def test_output_past_the_cap_is_cut_and_the_tool_killed(backend: ProcessBackend) -> None:
    outcome = await backend.run(
        replace(
            python("import sys\nwhile True: sys.stdout.buffer.write(b'x' * 65536)"),
            limits=Limits(output_bytes=100_000),
        )
    )

    assert outcome.output_truncated
    assert outcome.stdout == b"x" * 100_000
    assert outcome.exit_code is None
    assert not outcome.timed_out


async def test_a_memory_limit_makes_a_big_allocation_fail(backend: ProcessBackend) -> None:
    outcome = await backend.run(replace(python("bytearray(512 * 1024 * 1024)"), limits=Limits(memory_mb=128)))

    assert outcome.exit_code == 1
    assert "MemoryError" in outcome.stderr_tail
    assert outcome.memory_exceeded
    assert outcome.cpu_seconds is not None and outcome.max_rss_kb is not None


async def test_the_tool_sees_only_the_scrubbed_environment_and_its_own_variables(
    backend: ProcessBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AF_TEST_SECRET", "do-not-leak")

    outcome = await backend.run(
        replace(
            python("import json, os; print(json.dumps([dict(os.environ), os.getcwd()]))"),
            env={"MODE": "test"},
        )
    )

    environment, cwd = json.loads(outcome.stdout)
    assert environment == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "LANG": "C.UTF-8",
        "MODE": "test",
    }


async def test_files_are_written_into_a_working_dir_that_is_gone_after_the_call(
    backend: ProcessBackend,
) -> None:
    call = SandboxCall(
        call_id="files-1",
        command=(sys.executable, "main.py"),
        stdin=b"",
        files={
            "main.py": "import os\nprint(open('data/in.txt').read(), os.getcwd())",
            "data/in.txt": "héllo",
        },
    )

    outcome = await backend.run(call)

    content, cwd = outcome.stdout.decode().split()
    assert content == "héllo"
    assert Path(cwd).name.startswith("af-call-")
    assert not await asyncio.to_thread(Path(cwd).exists)


@pytest.mark.parametrize("path", ["/etc/evil", "../evil", "data/../../evil", ""])
async def test_file_paths_that_leave_the_working_dir_are_refused(backend: ProcessBackend, path: str) -> None:
    with pytest.raises(SandboxError, match="must be relative"):
        await backend.run(SandboxCall(call_id="test-1", command=("/bin/true",), stdin=b"", files={path: "x"}))


async def test_a_command_that_does_not_exist_cannot_start(backend: ProcessBackend) -> None:
    with pytest.raises(SandboxError, match="af-no-such-tool"):
        await backend.run(SandboxCall(call_id="test-1", command=("af-no-such-tool",), stdin=b""))


async def test_cancelling_a_call_kills_the_tool_and_its_children_and_reaps_the_tool(
    backend: ProcessBackend, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    running = asyncio.create_task(backend.run(shell(f"sleep 30 & echo $$ $! > {pids_file}; wait")))
    assert await eventually(lambda: pids_file.exists() and pids_file.read_text().endswith("\n"))
    tool, child = map(int, pids_file.read_text().split())

    running.cancel()

    with pytest.raises(asyncio.CancelledError):
        await running
    assert await all_gone(child)
    # The tool is ours to reap, so not even a zombie of it may remain.
    assert await eventually(lambda: not Path(f"/proc/{tool}").exists())


async def test_the_process_backend_is_opened_by_name_and_warns_that_it_does_not_isolate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="sandbox"):
        opened = open_backend(SandboxSettings(backend="process"))

    assert opened.kind == "process"
    assert "NO isolation" in caplog.text
    await opened.close()


def test_an_unknown_backend_name_is_refused_with_the_valid_choices() -> None:
    with pytest.raises(SandboxError, match="valid choices: docker, process, runsc"):
        open_backend(SandboxSettings(backend="vm"))


async def test_a_new_backend_deletes_the_call_dirs_a_killed_worker_left_and_close_removes_its_own(
    tmp_path: Path,
) -> None:
    # A dir named for this pid with another start time: its process has died (the pid was reused since).
    left = tmp_path / f"{os.getpid()}-1-0badc0de"
    (left / "af-call-x").mkdir(parents=True)
    (left / "af-call-x" / "main.py").write_text("print(1)")

    backend = ProcessBackend(tmp_path)
    try:
        assert not left.exists()
        outcome = await backend.run(python("print(1)"))
        assert outcome.stdout == b"1\n", outcome
        assert os.listdir(tmp_path) == [backend.dir.name]
        assert os.listdir(backend.dir) == []  # each call's dir is wiped after it
    finally:
        await backend.close()
    assert os.listdir(tmp_path) == []


async def test_what_a_tool_writes_to_stderr_is_handed_over_while_it_runs(
    backend: ProcessBackend, tmp_path: Path
) -> None:
    # The tool waits for a file that only the hand-over of its first line creates: were stderr handed over
    # after the tool's end, the call would run into its wall limit.
    go = tmp_path / "go"
    pieces: list[bytes] = []

    def on_stderr(data: bytes) -> None:
        pieces.append(data)
        if b"waiting\n" in b"".join(pieces):
            go.touch()

    code = (
        "import os, sys, time\n"
        "sys.stderr.write('waiting\\n'); sys.stderr.flush()\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "sys.stderr.write('done\\n')\n"
    )
    call = replace(python(code), on_stderr=on_stderr, limits=Limits(wall_seconds=20))

    outcome = await backend.run(call)

    assert (outcome.exit_code, outcome.timed_out) == (0, False)
    assert b"".join(pieces) == b"waiting\ndone\n"
    assert outcome.stderr_tail == "waiting\ndone\n"  # the tail is kept all the same


INIT_REPORT = b"\n" + NONCE + REPORT + b"\n"
"""What a sandbox's init writes on stderr once its tool has exited (see sandbox/_child.py)."""


@pytest.mark.parametrize(
    ("arrivals", "handed_over"),
    [
        ([b"one\ntwo", INIT_REPORT], b"one\ntwo"),
        ([b"one\ntwo" + INIT_REPORT], b"one\ntwo"),
        ([b"one\ntwo\n", INIT_REPORT], b"one\ntwo\n"),
        ([b"one\ntwo\n" + INIT_REPORT], b"one\ntwo\n"),
        # The report's newline read apart from the rest (never seen: the init writes both at once) costs a
        # blank line, never the nonce.
        ([b"one\ntwo\n", INIT_REPORT[:1], INIT_REPORT[1:]], b"one\ntwo\n\n"),
    ],
    ids=["apart", "together", "after-a-newline", "together-after-a-newline", "newline-alone"],
)
async def test_the_report_of_a_sandboxs_init_is_never_handed_over_as_stderr(
    arrivals: list[bytes], handed_over: bytes
) -> None:
    output = Output(1024, NONCE)
    pieces: list[bytes] = []
    output.on_stderr = pieces.append

    for data in arrivals:
        output.data_received(2, data)

    assert b"".join(pieces) == handed_over
    assert output.reported.done()
