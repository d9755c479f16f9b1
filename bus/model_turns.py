"""Model turns over NATS: a worker asks the control plane's model gateway for an agent's next completion.

A worker running the built-in ``@model`` tool sends a ``TurnRequest`` on ``af.<tenant>.llm.turns`` (core
NATS request/reply: the subject names the tenant, so NATS permissions confine a tenant's workers to their
own); one control plane of the queue group answers with a ``TurnReply``, saying meanwhile that it is still
on it. Durability is the task's: a turn whose answer is lost (a control plane gone mid-call and silent, a
request timed out) fails as ``retryable`` and is tried again, and the gateway answers a repeated turn from
its record instead of calling the model twice. A task cancelled by the control plane
(``af.<tenant>.cancel``) stops its turn in the gateway too.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg

from bus import subjects
from bus.connection import Bus
from bus.messages import CancelTasks, TurnReply, TurnRequest, decode, encode

QUEUE_GROUP = "control-plane"


PROGRESS_SECONDS = 2.0
"""How often the control plane answering a turn says it is still on it."""
SILENCE_SECONDS = 3 * PROGRESS_SECONDS
"""No word for this long: the control plane answering has died (a kill -9), and the turn is tried again."""
_NO_RESPONDERS = "503"


async def ask(bus: Bus, request: TurnRequest, seconds: float) -> TurnReply:
    """Send the turn and wait up to ``seconds`` for the gateway's reply; never raises for a lost one.

    The control plane answering sends word (``working``) every ``PROGRESS_SECONDS`` until the answer, so a
    dead one is noticed within ``SILENCE_SECONDS`` rather than at the end of ``seconds``."""
    replies: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        replies.put_nowait(msg)

    inbox = bus.client.new_inbox()
    subscription = await bus.client.subscribe(inbox, cb=on_msg)
    try:
        await bus.client.publish(subjects.model_turns(request.tenant), encode(request), reply=inbox)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await asyncio.wait_for(replies.get(), min(left, SILENCE_SECONDS))
            except TimeoutError:
                if left > SILENCE_SECONDS:
                    return TurnReply(ok=False, error="the control plane answering the turn went silent", retryable=True)
                continue
            if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
                return TurnReply(ok=False, error="no control plane answers model turns now", retryable=True)
            try:
                reply = decode(msg.data, TurnReply)
            except (msgspec.DecodeError, msgspec.ValidationError) as error:
                return TurnReply(ok=False, error=f"the model gateway's reply is malformed: {error}", retryable=True)
            if not reply.working:
                return reply
        return TurnReply(ok=False, error=f"the model gateway did not answer in {seconds:.0f} s", retryable=True)
    finally:
        await subscription.unsubscribe()


async def serve(bus: Bus, answer: Callable[[str, TurnRequest], Awaitable[TurnReply]]) -> None:
    """Answer every tenant's turns with ``answer(tenant, request)``, each on a task of its own, saying
    ``working`` every ``PROGRESS_SECONDS`` until then; the tenant is the subject's, whatever the request says."""

    running: set[asyncio.Task[None]] = set()
    working = encode(TurnReply(ok=False, working=True))

    async def reply(msg: Msg) -> None:
        tenant = msg.subject.split(".")[1]
        try:
            request = decode(msg.data, TurnRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            await msg.respond(encode(TurnReply(ok=False, error=f"malformed turn request: {error}")))
            return
        answering = asyncio.ensure_future(answer(tenant, request))
        while not (await asyncio.wait({answering}, timeout=PROGRESS_SECONDS))[0]:
            await msg.respond(working)
        await msg.respond(encode(answering.result()))

    async def on_msg(msg: Msg) -> None:
        # A model call takes seconds: the subscription's own task only hands each request on.
        task = asyncio.create_task(reply(msg))
        running.add(task)
        task.add_done_callback(running.discard)

    await bus.client.subscribe(subjects.ALL_MODEL_TURNS, queue=QUEUE_GROUP, cb=on_msg, pending_msgs_limit=100_000)


async def serve_cancels(bus: Bus, cancelled: Callable[[str, CancelTasks], None]) -> None:
    """Hear every tenant's cancelled tasks (every control plane does: any of them may be answering one of
    their turns), calling ``cancelled(tenant, notice)``; the tenant is the subject's."""

    async def on_msg(msg: Msg) -> None:
        try:
            notice = decode(msg.data, CancelTasks)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return  # the workers that listen there log it
        cancelled(msg.subject.split(".")[1], notice)

    await bus.client.subscribe(subjects.ALL_CANCELS, cb=on_msg)
