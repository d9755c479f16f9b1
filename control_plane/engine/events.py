"""Run events: what is recorded in PostgreSQL and then published for watchers."""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bus import subjects
from bus.messages import RunEvent, RunEvents, encode, json_text
from bus.publish import Outgoing
from bus.states import FINAL_RUN_STATES
from registry.runs import NewEvent

FINAL_EVENT_TYPES = frozenset(f"run.{state}" for state in FINAL_RUN_STATES)
"""The last event of every run: ``run.<its final state>``."""


@dataclass(slots=True)
class EventLog:
    """Appends events to one run, numbering them from the run's last sequence number."""

    tenant: str
    run_id: str
    last_seq: int
    events: list[NewEvent] = field(default_factory=list)

    def add(self, type_: str, data: dict[str, Any]) -> None:
        self.last_seq += 1
        self.events.append(
            NewEvent(run_id=self.run_id, seq=self.last_seq, tenant=self.tenant, type=type_, data=json_text(data))
        )


def outgoing(tenant: str, run_id: str, events: Sequence[NewEvent]) -> Outgoing:
    """One message carrying a run's newly committed events."""
    now = time.time()
    message = RunEvents(
        tenant=tenant,
        run_id=run_id,
        events=tuple(RunEvent(seq=e.seq, type=e.type, at=now, data=msgspec.Raw(e.data.encode())) for e in events),
    )
    return Outgoing(subjects.events(tenant, run_id), encode(message), f"{run_id}:ev:{events[-1].seq}")
