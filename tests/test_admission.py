"""The admission ledger (pure): limits per tenant and per queue, holding, release order."""

from dataclasses import dataclass

from control_plane.engine.admission import Admission
from registry.limits import TENANT_WIDE, OpenTask, QueueLimit


@dataclass(frozen=True)
class New:
    task_id: str
    queue: str


def tasks(queue: str, count: int, start: int = 0) -> list[New]:
    return [New(f"{queue}-{i}", queue) for i in range(start, start + count)]


def ledger(*limits: QueueLimit, ceiling: int = 0, open_tasks: tuple[OpenTask, ...] = ()) -> Admission:
    admission = Admission(ceiling)
    admission.configure(limits)
    admission.load("t", open_tasks)
    return admission


def test_without_limits_every_new_task_is_admitted() -> None:
    admitted, held = ledger().admit("t", tasks("q", 50))
    assert len(admitted) == 50 and held == []


def test_a_queue_admits_up_to_its_limit_and_holds_the_rest() -> None:
    admission = ledger(QueueLimit("t", "q", 3))
    admitted, held = admission.admit("t", tasks("q", 5))
    assert [t.task_id for t in admitted] == ["q-0", "q-1", "q-2"]
    assert [t.task_id for t in held] == ["q-3", "q-4"]
    assert admission.tenant_load("t") == (3, 2)


def test_the_tenant_limit_binds_over_all_queues_and_the_platform_ceiling_caps_it() -> None:
    admission = ledger(QueueLimit("t", TENANT_WIDE, 10), ceiling=4)
    assert admission.tenant_limit("t") == 4
    admitted, held = admission.admit("t", tasks("a", 3) + tasks("b", 3))
    assert len(admitted) == 4 and len(held) == 2


def test_new_tasks_never_overtake_held_ones() -> None:
    admission = ledger(QueueLimit("t", "q", 1))
    admission.admit("t", tasks("q", 2))
    assert admission.finished("t", ["q-0"]) is True
    admitted, held = admission.admit("t", tasks("q", 1, start=2))
    assert admitted == [] and [t.task_id for t in held] == ["q-2"]


def test_finishing_frees_slots_that_release_fills_by_queue_priority() -> None:
    admission = ledger(
        QueueLimit("t", TENANT_WIDE, 2), QueueLimit("t", "batch", None, 0), QueueLimit("t", "urgent", None, 7)
    )
    admission.admit("t", tasks("batch", 4) + tasks("urgent", 1))
    # The urgent queue's task was admitted first even though it came last in the batch.
    assert admission.load_of("t")[1].in_flight == 1
    assert admission.finished("t", ["batch-0"]) is True
    queues, total = admission.releasable("t")
    assert total == 1
    assert dict((q, (free, priority)) for q, free, priority in queues) == {"batch": (1, 0)}


def test_a_queue_limit_and_the_tenant_limit_bound_release_together() -> None:
    admission = ledger(QueueLimit("t", TENANT_WIDE, 5), QueueLimit("t", "slow", 1))
    admission.admit("t", tasks("slow", 3) + tasks("fast", 6))
    in_flight, held = admission.tenant_load("t")
    assert (in_flight, held) == (5, 4)
    admission.finished("t", ["slow-0", "fast-0"])
    queues, total = admission.releasable("t")
    assert total == 2
    assert {q: free for q, free, _ in queues} == {"slow": 1, "fast": 2}


def test_released_tasks_count_as_in_flight_and_leave_the_held_count() -> None:
    admission = ledger(QueueLimit("t", "q", 1))
    _, held = admission.admit("t", tasks("q", 3))
    admission.finished("t", ["q-0"])
    admission.released("t", held[:1])
    assert admission.tenant_load("t") == (1, 1)


def test_the_ledger_loads_open_tasks_from_the_record() -> None:
    admission = ledger(
        QueueLimit("t", "q", 2),
        open_tasks=(OpenTask("a", "q", False), OpenTask("b", "q", False), OpenTask("c", "q", True)),
    )
    admitted, held = admission.admit("t", tasks("q", 1))
    assert admitted == [] and len(held) == 1
    assert admission.tenant_load("t") == (2, 2)


def test_tasks_of_unknown_tenants_or_ids_free_nothing() -> None:
    admission = ledger(QueueLimit("t", "q", 1))
    admission.admit("t", tasks("q", 2))
    assert admission.finished("other", ["q-0"]) is False
    # Another control plane's task, unknown here, may have freed a slot of the limited tenant: worth a release.
    assert admission.finished("t", ["never-admitted"]) is True
    assert admission.tenant_load("t") == (1, 1)


def test_a_tenant_is_limited_while_a_limit_of_its_own_is_set() -> None:
    admission = ledger(QueueLimit("t", "q", None, 3))
    assert not admission.limited("t")
    admission.configure([QueueLimit("t", "", 5)])
    assert admission.limited("t")
    admission.configure_tenant("t", [QueueLimit("t", "q", None, 3)])
    assert not admission.limited("t") and admission.tenant_limit("t") is None


def test_tasks_the_relay_found_take_the_room_left_beside_held_ones() -> None:
    admission = ledger(QueueLimit("t", "q", 2))
    admission.admit("t", tasks("q", 3))  # q-2 held
    admission.finished("t", ["q-0"])
    assert admission.admit("t", tasks("q", 1, start=5))[0] == []  # new ones queue behind q-2
    admitted, held = admission.admit("t", tasks("q", 1, start=6), behind_held=False)
    assert len(admitted) == 1 and held == []


def test_new_tasks_a_load_already_counted_in_flight_are_admitted_once() -> None:
    admission = ledger(QueueLimit("t", "q", 2), open_tasks=(OpenTask("q-0", "q", False), OpenTask("q-1", "q", False)))
    admitted, held = admission.admit("t", tasks("q", 3))
    assert [t.task_id for t in admitted] == ["q-0", "q-1"] and [t.task_id for t in held] == ["q-2"]
