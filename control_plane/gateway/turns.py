"""Agents' model turns, asked by workers over the bus (``bus.model_turns``) and answered by ``Gateway.chat``.

A turn's call is keyed by its run, its task (one per turn) and its turn number, never by the task's attempt:
a turn tried again after its answer was lost is answered from the record of the call that was made, so no
finished model call is made twice. The tenant is the subject's, whatever the request says. A cancelled
task's call in flight is stopped (recorded as ``cancelled``), and its later requests are refused.
"""

import asyncio
import logging
import time

import msgspec

from bus.messages import CancelTasks, TurnReply, TurnRequest, encode
from control_plane.errors import BudgetExceeded, Refused, Throttled, Unavailable, UpstreamFailed
from control_plane.gateway.gateway import CANCELLED_RUN, CallContext, Gateway

log = logging.getLogger(__name__)

CANCELLED_KEPT_SECONDS = 600.0
"""How long a cancelled turn's task is remembered, so that a request of it arriving late calls no model."""
_RETRYABLE = (Throttled, Unavailable, UpstreamFailed)
"""A later try may succeed: the chain may have a healthy deployment again. A budget or a bad request won't."""


def turn_number(step: str) -> int | None:
    """3 for the step ``turn-3`` (of a run, or of an agent step inside a workflow: ``review/turn-3``)."""
    _, _, number = step.rpartition("turn-")
    return int(number) if number.isdigit() else None


class TurnAnswerer:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway
        self._cancelled: dict[tuple[str, str], float] = {}
        """(tenant, task id) of turns cancelled lately, with when that is forgotten: a request of one that
        arrives after its cancel (a redelivery, a slow worker) calls no model."""

    def cancelled(self, tenant: str, notice: CancelTasks) -> None:
        """The control plane cancelled these tasks (their run was cancelled): stop their calls in flight."""
        now = time.monotonic()
        self._cancelled = {key: until for key, until in self._cancelled.items() if until > now}
        self._cancelled.update(((tenant, task_id), now + CANCELLED_KEPT_SECONDS) for task_id in notice.task_ids)
        stopped = self._gateway.cancel_calls(tenant, notice.run_id, notice.task_ids)
        if stopped:
            log.info("stopped %d model call(s) of cancelled run %s", stopped, notice.run_id)

    async def answer(self, tenant: str, request: TurnRequest) -> TurnReply:
        if request.tenant != tenant:
            return TurnReply(ok=False, error=f"a turn of tenant {request.tenant!r} sent on {tenant!r}'s subject")
        if (tenant, request.task_id) in self._cancelled:
            return TurnReply(ok=False, error=f"cancelled: {CANCELLED_RUN}")
        context = CallContext(
            tenant=tenant,
            run_id=request.run_id,
            task_id=request.task_id,
            attempt=1,
            turn=turn_number(request.step),
            caller=f"agent:{request.agent}",
            first=request.first,
        )
        try:
            body = msgspec.json.decode(request.body)
            completion = await self._gateway.chat(body, context=context)
        except msgspec.DecodeError as error:
            return TurnReply(ok=False, error=f"the turn's request is not JSON: {error}")
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the control plane is stopping
            return TurnReply(ok=False, error=f"cancelled: {CANCELLED_RUN}")
        except BudgetExceeded as refused:
            return TurnReply(ok=False, error=f"budget-exceeded: {refused.detail}")
        except Refused as refused:
            return TurnReply(
                ok=False, error=f"{refused.kind}: {refused.detail}", retryable=isinstance(refused, _RETRYABLE)
            )
        except Exception as error:  # a turn must always be answered: the worker would wait out its timeout
            log.exception("answering a model turn of run %s failed", request.run_id)
            return TurnReply(ok=False, error=f"the gateway failed: {type(error).__name__}", retryable=True)
        return TurnReply(ok=True, completion=msgspec.Raw(encode(completion)))
