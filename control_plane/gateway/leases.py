"""One call per model turn across control planes: a turn's key is leased in PostgreSQL to the control plane
calling the model (``registry.llm_calls.take_lease``).

A turn reaches a control plane through the bus, and two may get it at once (a worker tried it again while
the first was still being answered). Inside one control plane the gateway joins the calls of one key in
flight; across them, the one that takes the lease calls the model, renewing the lease every
``RENEW_SECONDS`` while it does, and the other waits, reading again (every 20 ms at first, then up to every
half second) until the holder's answer is recorded, or until the lease ends: given up after a call that
recorded no answer (it failed, it was cancelled), or run out ``LEASE_SECONDS`` after its holder died.
A lease left after an answer runs out on its own, and leases that ran out a minute ago are swept.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from registry import llm_calls
from registry.db import Pool

log = logging.getLogger(__name__)

LEASE_SECONDS = 10.0
RENEW_SECONDS = 3.0
FIRST_WAIT_SECONDS = 0.02
LONGEST_WAIT_SECONDS = 0.5
SWEEP_SECONDS = 60.0


class TurnLeases:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.holder = uuid.uuid4().hex
        """This gateway's name on the leases it holds."""

    async def call_once(
        self, tenant: str, key: str, call: Callable[[], Awaitable[dict[str, Any]]], *, first: bool = False
    ) -> dict[str, Any]:
        """The answer recorded for turn ``key``, or ``call()``'s, made while holding the turn's lease (waited
        for while another control plane holds it).

        ``first``: the turn was never asked before, so no other call of it can hold the lease or have recorded
        an answer; the call starts while the lease is taken rather than a database round trip later. Should
        the lease still turn out to be another's (a task message published twice, past JetStream's duplicate
        window), that early call is stopped and the holder's answer waited for."""
        early = asyncio.ensure_future(call()) if first else None
        try:
            recorded = await self._take(tenant, key, early)
        except BaseException:
            if early is not None:
                early.cancel()
            raise
        if recorded is not None:
            completion: dict[str, Any] = msgspec.json.decode(recorded)
            return completion
        renewing = asyncio.create_task(self._renew(tenant, key))
        answered = False
        try:
            answer = await (early if early is not None and not early.cancelled() else call())
            answered = True
            return answer
        finally:
            renewing.cancel()
            if not answered:
                await llm_calls.release_lease(self._pool, tenant, key, self.holder)

    async def _take(self, tenant: str, key: str, early: "asyncio.Future[dict[str, Any]] | None") -> str | None:
        """Take the turn's lease (None once held) unless an answer is recorded for it (that answer); an
        ``early`` call is stopped as soon as the lease is found to be another's."""
        wait = FIRST_WAIT_SECONDS
        while True:
            held, recorded = await llm_calls.take_lease(self._pool, tenant, key, self.holder, LEASE_SECONDS)
            if held and recorded is None:
                return None
            if early is not None:
                if not early.done():
                    log.warning("model turn %s was asked as new but its lease is another's: stopping its call", key)
                early.cancel("the turn's lease is another's")
                await asyncio.gather(early, return_exceptions=True)
            if recorded is not None:
                return recorded
            await asyncio.sleep(wait)
            wait = min(wait * 2, LONGEST_WAIT_SECONDS)

    async def _renew(self, tenant: str, key: str) -> None:
        while True:
            await asyncio.sleep(RENEW_SECONDS)
            try:
                held, _ = await llm_calls.take_lease(self._pool, tenant, key, self.holder, LEASE_SECONDS)
            except Exception as error:  # the next renewal may get through; the call goes on either way
                log.warning("cannot renew the lease of model turn %s: %s", key, error)
                continue
            if not held:
                log.warning("the lease of model turn %s ran out while it was called: another may call it", key)
                return

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep the leases that ran out, every ``SWEEP_SECONDS`` until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SWEEP_SECONDS)
                return
            try:
                await llm_calls.sweep_leases(self._pool, SWEEP_SECONDS)
            except Exception as error:
                log.warning("cannot sweep the leases of model turns: %s", error)
