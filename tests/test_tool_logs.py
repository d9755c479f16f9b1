"""A worker's live stderr of an attempt: pieces gathered and numbered, a character cut between two writes
whole, at most MAX_BYTES an attempt, and what is left sent by close (before the attempt's result)."""

import asyncio

from bus.messages import ToolLog
from tests.conftest import noop_task
from worker.tool_logs import MAX_BYTES, LiveStderr

TASK = noop_task("logs-test")


class Sent:
    """Where the pieces go instead of NATS: a list, in the order they were published."""

    def __init__(self) -> None:
        self.pieces: list[ToolLog] = []
        self.first = asyncio.Event()

    async def __call__(self, piece: ToolLog) -> None:
        self.pieces.append(piece)
        self.first.set()


async def test_pieces_written_together_go_as_one_and_close_sends_the_rest() -> None:
    sent = Sent()
    live = LiveStderr(TASK, "w-1", sent)

    live.write(b"one\n")
    live.write("tw\u00f6".encode()[:3])  # the \u00f6 cut in two
    await sent.first.wait()  # FLUSH_SECONDS on, the first piece goes
    live.write("tw\u00f6".encode()[3:] + b"\n")
    await live.close()

    assert [(p.seq, p.text, p.truncated) for p in sent.pieces] == [(1, "one\ntw", False), (2, "\u00f6\n", False)]
    assert {(p.task_id, p.attempt, p.step, p.worker_id) for p in sent.pieces} == {
        (TASK.task_id, TASK.attempt, TASK.step, "w-1")
    }


async def test_an_attempt_streams_max_bytes_then_says_it_was_cut() -> None:
    sent = Sent()
    live = LiveStderr(TASK, "w-1", sent)

    for _ in range(3):
        live.write(b"x" * (MAX_BYTES // 2))
    live.write(b"never sent")
    await live.close()

    assert sum(len(p.text) for p in sent.pieces) == MAX_BYTES
    assert sent.pieces[-1].truncated


async def test_an_attempt_that_wrote_nothing_sends_nothing() -> None:
    sent = Sent()

    await LiveStderr(TASK, "w-1", sent).close()

    assert sent.pieces == []
