"""A tool's stderr, live: what an attempt's tool writes is published as it runs, for `af logs --follow`.

The sandbox hands each piece over as it arrives (``SandboxCall.on_stderr``); a ``LiveStderr`` gathers them for
``FLUSH_SECONDS`` at most, so a chatty tool costs a message per interval rather than one per write, and
publishes them as ``ToolLog`` messages on ``af.<tenant>.logs.<run_id>``, without waiting for the stream
(AF_LOGS keeps them an hour, for a follower who comes late; the result carries the tail for the record). It
streams ``MAX_BYTES`` of an attempt at most, then says it stopped. Publishing never fails the task: a piece
that cannot be sent is dropped.
"""

import asyncio
import codecs
import logging
import time
from collections.abc import Awaitable, Callable

from bus.messages import Task, ToolLog

log = logging.getLogger(__name__)

FLUSH_SECONDS = 0.1
"""How long a piece of stderr may wait for more before it is published."""

MAX_BYTES = 1_048_576
"""What one attempt streams at most; past it the rest stays in the sandbox (and its tail in the result)."""

Publish = Callable[[ToolLog], Awaitable[None]]


class LiveStderr:
    """The live stderr of one attempt: ``write`` takes pieces (on the event loop, never blocking), ``close``
    publishes what is left; awaited before the attempt's result goes out, so that the result follows it."""

    def __init__(self, task: Task, worker_id: str, publish: Publish) -> None:
        self._task = task
        self._worker_id = worker_id
        self._publish = publish
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending: list[str] = []
        self._taken = 0
        self._truncated = False
        self._said_truncated = False
        self._seq = 0
        self._flush: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self._truncated:
            return
        room = MAX_BYTES - self._taken
        self._taken += min(len(data), room)
        self._truncated = len(data) > room
        self._pending.append(self._decoder.decode(data[:room]))
        if self._flush is None:
            self._flush = asyncio.create_task(self._flush_soon())

    async def close(self) -> None:
        if self._flush is not None:  # still waiting: what it would send goes now
            self._flush.cancel()
            self._flush = None
        self._pending.append(self._decoder.decode(b"", final=True))
        await self._send()

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_SECONDS)
        self._flush = None
        await self._send()

    async def _send(self) -> None:
        text = "".join(self._pending)
        self._pending.clear()
        if not text and self._truncated == self._said_truncated:
            return
        self._said_truncated = self._truncated
        self._seq += 1
        task = self._task
        message = ToolLog(
            tenant=task.tenant,
            run_id=task.run_id,
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self._worker_id,
            step=task.step,
            seq=self._seq,
            text=text,
            at=time.time(),
            truncated=self._truncated,
        )
        try:
            await self._publish(message)
        except Exception as error:  # the connection is down or closing: the log is live only
            log.debug("dropped live stderr of task %s: %s", task.task_id, error)
