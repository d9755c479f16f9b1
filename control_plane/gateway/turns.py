"""Agents' model turns, asked by workers over the bus (``bus.model_turns``) and answered by ``Gateway.chat``.

A turn's call is keyed by its run, its task (one per turn) and its turn number, never by the task's attempt:
a turn tried again after its answer was lost is answered from the record of the call that was made, so no
finished model call is made twice. The tenant is the subject's, whatever the request says.
"""

import logging

import msgspec

from bus.messages import TurnReply, TurnRequest, encode
from control_plane.errors import BudgetExceeded, Refused, Throttled, Unavailable, UpstreamFailed
from control_plane.gateway.gateway import CallContext, Gateway

log = logging.getLogger(__name__)

_RETRYABLE = (Throttled, Unavailable, UpstreamFailed)
"""A later try may succeed: the chain may have a healthy deployment again. A budget or a bad request won't."""


def turn_number(step: str) -> int | None:
    """3 for the step ``turn-3`` (of a run, or of an agent step inside a workflow: ``review/turn-3``)."""
    _, _, number = step.rpartition("turn-")
    return int(number) if number.isdigit() else None


class TurnAnswerer:
    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def answer(self, tenant: str, request: TurnRequest) -> TurnReply:
        if request.tenant != tenant:
            return TurnReply(ok=False, error=f"a turn of tenant {request.tenant!r} sent on {tenant!r}'s subject")
        context = CallContext(
            tenant=tenant,
            run_id=request.run_id,
            task_id=request.task_id,
            attempt=1,
            turn=turn_number(request.step),
            caller=f"agent:{request.agent}",
        )
        try:
            body = msgspec.json.decode(request.body)
            completion = await self._gateway.chat(body, context=context)
        except msgspec.DecodeError as error:
            return TurnReply(ok=False, error=f"the turn's request is not JSON: {error}")
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
