"""Model turns over NATS: a worker asks the control plane's model gateway for an agent's next completion.

A worker running the built-in ``@model`` tool sends a ``TurnRequest`` on ``af.<tenant>.llm.turns`` (core
NATS request/reply: the subject names the tenant, so NATS permissions confine a tenant's workers to their
own); one control plane of the queue group answers with a ``TurnReply``. Durability is the task's: a turn
whose answer is lost (a control plane gone mid-call, a request timed out) fails as ``retryable`` and is
tried again, and the gateway answers a repeated turn from its record instead of calling the model twice.
A task cancelled by the control plane (``af.<tenant>.cancel``) stops its turn in the gateway too.
"""

import asyncio
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from bus import subjects
from bus.connection import Bus
from bus.messages import CancelTasks, TurnReply, TurnRequest, decode, encode

QUEUE_GROUP = "control-plane"


async def ask(bus: Bus, request: TurnRequest, seconds: float) -> TurnReply:
    """Send the turn and wait up to ``seconds`` for the gateway's reply; never raises for a lost one."""
    try:
        msg = await bus.client.request(subjects.model_turns(request.tenant), encode(request), timeout=seconds)
    except NoRespondersError:
        return TurnReply(ok=False, error="no control plane answers model turns now", retryable=True)
    except NatsTimeout:
        return TurnReply(ok=False, error=f"the model gateway did not answer in {seconds:.0f} s", retryable=True)
    try:
        return decode(msg.data, TurnReply)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        return TurnReply(ok=False, error=f"the model gateway's reply is malformed: {error}", retryable=True)


async def serve(bus: Bus, answer: Callable[[str, TurnRequest], Awaitable[TurnReply]]) -> None:
    """Answer every tenant's turns with ``answer(tenant, request)``, each on a task of its own; the tenant is
    the subject's, whatever the request says."""

    running: set[asyncio.Task[None]] = set()

    async def reply(msg: Msg) -> None:
        tenant = msg.subject.split(".")[1]
        try:
            request = decode(msg.data, TurnRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            await msg.respond(encode(TurnReply(ok=False, error=f"malformed turn request: {error}")))
            return
        await msg.respond(encode(await answer(tenant, request)))

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
