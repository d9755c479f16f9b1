"""Admission: how many of a tenant's tasks may be on the bus at once, per tenant and per queue.

A task is *in flight* from the moment it is admitted onto the bus until it reaches a final state (a retry
keeps its slot through its backoff). New tasks over a limit are *held* in PostgreSQL instead, and released
as slots free: higher-priority queues first, oldest first within a queue. New tasks never overtake held
ones, so a queue stays first-in first-out under pressure.

This is the in-memory ledger of one control plane. For a tenant with a limit of its own, the dispatcher
loads it from PostgreSQL under the tenant's ledger lock before each admission and release, so that several
control planes admitting at once count each other's tasks; for any other tenant it is loaded when first met
and reloaded periodically (the platform's ceiling holds per control plane between reloads), and read again
under the lock before a task is held.
"""

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from registry.limits import TENANT_WIDE, OpenTask, QueueLimit


class Admittable(Protocol):
    @property
    def task_id(self) -> str: ...

    @property
    def queue(self) -> str: ...


D = TypeVar("D", bound=Admittable)


@dataclass(slots=True)
class _Tenant:
    in_flight: dict[str, set[str]] = field(default_factory=dict)
    """Admitted task ids by queue."""
    held: Counter[str] = field(default_factory=Counter)
    """Held tasks by queue (what the dispatcher held or found held, less what it released)."""

    def total(self) -> int:
        return sum(len(ids) for ids in self.in_flight.values())


@dataclass(frozen=True, slots=True)
class QueueLoad:
    queue: str
    max_in_flight: int | None
    priority: int
    in_flight: int
    held: int


class Admission:
    def __init__(self, tenant_ceiling: int) -> None:
        self._ceiling = tenant_ceiling
        """The most any tenant may have in flight (0: no ceiling), whatever its own limit says."""
        self._limits: dict[tuple[str, str], QueueLimit] = {}
        self._tenants: dict[str, _Tenant] = {}
        self._limited: set[str] = set()
        """Tenants with a limit of their own (``limited``)."""

    # --- limits -------------------------------------------------------------------------------------

    def set_ceiling(self, tenant_ceiling: int) -> None:
        """The platform's ceiling reloaded: admissions and releases from now on go by it."""
        self._ceiling = tenant_ceiling

    def configure(self, limits: Iterable[QueueLimit]) -> None:
        touched = set()
        for limit in limits:
            self._limits[(limit.tenant, limit.queue)] = limit
            touched.add(limit.tenant)
        for tenant in touched:
            own = any(t == tenant and limit.max_in_flight is not None for (t, _), limit in self._limits.items())
            (self._limited.add if own else self._limited.discard)(tenant)

    def configure_tenant(self, tenant: str, limits: Iterable[QueueLimit]) -> None:
        """Replace the tenant's limits with ``limits`` (as read from PostgreSQL)."""
        for key in [key for key in self._limits if key[0] == tenant]:
            del self._limits[key]
        self._limited.discard(tenant)
        self.configure(limits)

    def limited(self, tenant: str) -> bool:
        """Whether the tenant has an in-flight limit of its own, on itself or on one of its queues."""
        return tenant in self._limited

    def tenant_limit(self, tenant: str) -> int | None:
        own = self._limits.get((tenant, TENANT_WIDE))
        caps = [c for c in (self._ceiling or None, own and own.max_in_flight) if c]
        return min(caps) if caps else None

    def queue_limit(self, tenant: str, queue: str) -> QueueLimit:
        return self._limits.get((tenant, queue)) or QueueLimit(tenant, queue, None, 0)

    # --- the ledger ---------------------------------------------------------------------------------

    def knows(self, tenant: str) -> bool:
        return tenant in self._tenants

    def load(self, tenant: str, open_tasks: Sequence[OpenTask]) -> None:
        """Replace the tenant's ledger with what PostgreSQL holds."""
        ledger = self._tenants[tenant] = _Tenant()
        for task in open_tasks:
            if task.held:
                ledger.held[task.queue] += 1
            else:
                ledger.in_flight.setdefault(task.queue, set()).add(task.id)

    def admit(self, tenant: str, tasks: Sequence[D], *, behind_held: bool = True) -> tuple[list[D], list[D]]:
        """Split new tasks into those that go onto the bus now and those to hold: all of them while the tenant
        has held tasks, unless ``behind_held`` is False (tasks the outbox relay found, which may have been
        admitted before a crash: those take only the room left)."""
        ledger = self._tenants[tenant]
        for task in tasks:
            # A load from PostgreSQL between the tasks' commit and now counted them in flight already.
            ledger.in_flight.get(task.queue, set()).discard(task.task_id)
        if behind_held and any(ledger.held.values()):
            admitted: list[D] = []
            held = list(tasks)
        else:
            room = self._room(tenant, ledger)
            admitted, held = [], []
            for task in sorted(tasks, key=lambda t: -self.queue_limit(tenant, t.queue).priority):
                if room.take(task.queue):
                    admitted.append(task)
                else:
                    held.append(task)
        self.admitted(tenant, admitted)
        for task in held:
            ledger.held[task.queue] += 1
        return admitted, held

    def admitted(self, tenant: str, tasks: Iterable[Admittable]) -> None:
        ledger = self._tenants.get(tenant)
        if ledger is not None:
            for task in tasks:
                ledger.in_flight.setdefault(task.queue, set()).add(task.task_id)

    def released(self, tenant: str, tasks: Sequence[Admittable]) -> None:
        ledger = self._tenants[tenant]
        for task in tasks:
            ledger.held[task.queue] = max(0, ledger.held[task.queue] - 1)
        self.admitted(tenant, tasks)

    def finished(self, tenant: str, task_ids: Iterable[str]) -> bool:
        """Free the slots of tasks that reached a final state; True if held tasks may now be released (for a
        limited tenant, whenever the ledger last read showed held tasks: another control plane's tasks, which
        this one may not know, can have freed the slots)."""
        ledger = self._tenants.get(tenant)
        if ledger is None:
            return False
        freed = self.limited(tenant)
        for task_id in task_ids:
            for ids in ledger.in_flight.values():
                if task_id in ids:
                    ids.discard(task_id)
                    freed = True
                    break
        return freed and any(ledger.held.values())

    def releasable(self, tenant: str) -> tuple[list[tuple[str, int, int]], int]:
        """``([(queue, free slots, priority)], total free)`` over the queues with held tasks."""
        ledger = self._tenants.get(tenant)
        if ledger is None:
            return [], 0
        room = self._room(tenant, ledger)
        queues = [
            (queue, room.free(queue), self.queue_limit(tenant, queue).priority)
            for queue, count in ledger.held.items()
            if count
        ]
        queues = [q for q in queues if q[1] > 0]
        return queues, min(room.tenant_free, sum(q[1] for q in queues))

    def with_held(self) -> list[str]:
        return [tenant for tenant, ledger in self._tenants.items() if any(ledger.held.values())]

    def tenants(self) -> list[str]:
        return list(self._tenants)

    def load_of(self, tenant: str) -> list[QueueLoad]:
        """Every queue the tenant has a limit for or tasks in, with its limit, priority and load."""
        ledger = self._tenants.get(tenant) or _Tenant()
        queues = {q for (t, q) in self._limits if t == tenant and q != TENANT_WIDE}
        queues |= {q for q, ids in ledger.in_flight.items() if ids} | {q for q, n in ledger.held.items() if n}
        return [
            QueueLoad(
                queue,
                self.queue_limit(tenant, queue).max_in_flight,
                self.queue_limit(tenant, queue).priority,
                len(ledger.in_flight.get(queue, ())),
                ledger.held[queue],
            )
            for queue in sorted(queues)
        ]

    def tenant_load(self, tenant: str) -> tuple[int, int]:
        """(in flight, held) over all of the tenant's queues."""
        ledger = self._tenants.get(tenant) or _Tenant()
        return ledger.total(), sum(ledger.held.values())

    def _room(self, tenant: str, ledger: _Tenant) -> "_Room":
        limit = self.tenant_limit(tenant)
        return _Room(self, tenant, ledger, _UNLIMITED if limit is None else max(0, limit - ledger.total()), Counter())


_UNLIMITED = 1 << 30


@dataclass(slots=True)
class _Room:
    """Free slots while admitting one batch."""

    admission: Admission
    tenant: str
    ledger: _Tenant
    tenant_free: int
    taken: Counter[str]

    def free(self, queue: str) -> int:
        limit = self.admission.queue_limit(self.tenant, queue).max_in_flight
        queue_free = _UNLIMITED if limit is None else limit - len(self.ledger.in_flight.get(queue, ()))
        return max(0, min(self.tenant_free, queue_free - self.taken[queue]))

    def take(self, queue: str) -> bool:
        if self.free(queue) <= 0:
            return False
        self.taken[queue] += 1
        self.tenant_free -= 1
        return True
