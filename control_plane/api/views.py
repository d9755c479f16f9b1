"""How stored rows look in the API: JSON documents, with stored JSON passed through undecoded."""

import dataclasses
from datetime import UTC, datetime
from typing import Any

import msgspec

from bus.messages import Heartbeat, ToolLog
from bus.states import TaskState
from bus.streams import QueueBacklog
from control_plane.catalog.resolver import BUILTIN_SIGNAL
from control_plane.engine.admission import Admission
from control_plane.engine.step_instances import Waiting
from registry.catalog import Entry
from registry.run_reads import EventRow, TaskRow
from registry.runs import RunRow, SandboxUsage


def _raw(text: str | None) -> msgspec.Raw | None:
    return None if text is None else msgspec.Raw(text.encode())


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def catalog_entry(entry: Entry) -> dict[str, Any]:
    view: dict[str, Any] = {
        "tenant": entry.tenant,
        "name": entry.name,
        "version": entry.version,
        "spec": _raw(entry.spec),
        "digest": entry.digest,
        "created_at": _time(entry.created_at),
    }
    if entry.kind is not None:
        view["kind"] = entry.kind
    return view


def run(row: RunRow, tasks: list[TaskRow] | None = None) -> dict[str, Any]:
    target = f"{row.target_name}@{row.target_version}"
    view: dict[str, Any] = {
        "id": row.id,
        "tenant": row.tenant,
        "workflow": target if row.target_kind == "workflow" else None,
        "tool": target if row.target_kind == "tool" else None,
        "agent": target if row.target_kind == "agent" else None,
        "state": row.state,
        "input": _raw(row.input),
        "output": _raw(row.output),
        "error": row.error,
        "created_at": _time(row.created_at),
        "updated_at": _time(row.updated_at),
        "finished_at": _time(row.finished_at),
    }
    if tasks is not None:
        view["tasks"] = [task(t) for t in tasks]
        view["usage"] = usage(tasks)
        view["waiting"] = waiting(tasks)
    return view


def waiting(tasks: list[TaskRow]) -> list[dict[str, Any]]:
    """The signals the run waits for now: each wait's step, signal names, the data that picks it (an
    approval's call) and what it is about."""
    found = []
    for row in tasks:
        if row.tool_name == BUILTIN_SIGNAL and row.state == TaskState.QUEUED:
            wait = msgspec.json.decode(row.input, type=Waiting)
            found.append({"step": row.step, "signals": wait.signals, "match": wait.match, "about": wait.about})
    return found


def usage(tasks: list[TaskRow]) -> dict[str, Any] | None:
    """Model usage summed over the run's tasks, per model and in total; None if no task reported any."""
    by_model: dict[str, dict[str, int]] = {}
    for row in tasks:
        reported = msgspec.json.decode(row.detail).get("usage") if row.detail else None
        if reported:
            entry = by_model.setdefault(reported.get("model") or "unknown", {"input_tokens": 0, "output_tokens": 0})
            entry["input_tokens"] += reported.get("input_tokens", 0)
            entry["output_tokens"] += reported.get("output_tokens", 0)
    if not by_model:
        return None
    total = {key: sum(entry[key] for entry in by_model.values()) for key in ("input_tokens", "output_tokens")}
    return {**total, "by_model": by_model}


def task(row: TaskRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "step": row.step,
        "element": row.element,
        "tool": f"{row.tool_name}@{row.tool_version}",
        "queue": row.queue,
        "attempt": row.attempt,
        "state": row.state,
        "input": _raw(row.input),
        "output": _raw(row.output),
        "error": row.error,
        "detail": _raw(row.detail),
        "worker_id": row.worker_id,
        "created_at": _time(row.created_at),
        "started_at": _time(row.started_at),
        "finished_at": _time(row.finished_at),
        "sandbox": sandbox_usage(row.usage),
    }


def sandbox_usage(usage: SandboxUsage) -> dict[str, Any] | None:
    """The sandbox of the task's latest finished attempt, what the attempt used, and where its time went."""
    if usage.sandbox is None:
        return None
    return {
        "kind": usage.sandbox,
        "cpu_seconds": usage.cpu_seconds,
        "max_rss_kb": usage.max_rss_kb,
        "timing": {
            "queue_seconds": usage.queue_seconds,
            "start_seconds": usage.start_seconds,
            "run_seconds": usage.run_seconds,
        },
    }


def event(row: EventRow) -> dict[str, Any]:
    return {"seq": row.seq, "type": row.type, "at": _time(row.at), "data": _raw(row.data)}


def tool_log(piece: ToolLog) -> dict[str, Any]:
    """A piece of a running tool's stderr, shaped like an event without a ``seq`` (it is live, not recorded)."""
    data = {"task_id": piece.task_id, "step": piece.step, "attempt": piece.attempt, "seq": piece.seq}
    data.update(text=piece.text, truncated=piece.truncated)
    return {"type": "log", "at": datetime.fromtimestamp(piece.at, UTC).isoformat(), "data": data}


def worker(beat: Heartbeat) -> dict[str, Any]:
    view: dict[str, Any] = msgspec.to_builtins(beat)
    view["id"] = view.pop("worker_id")
    view["last_heartbeat"] = datetime.fromtimestamp(beat.at).astimezone().isoformat()
    view["started_at"] = datetime.fromtimestamp(beat.started_at).astimezone().isoformat()
    del view["at"], view["v"]
    return view


def queues(admission: Admission, tenant: str, backlogs: list[QueueBacklog]) -> dict[str, Any]:
    """Each queue with its limits and load (admission's, as just read from the store) and its backlog on the bus."""
    in_flight, held = admission.tenant_load(tenant)
    waiting = {backlog.queue: backlog for backlog in backlogs}
    items: dict[str, dict[str, Any]] = {load.queue: dataclasses.asdict(load) for load in admission.load_of(tenant)}
    for queue in waiting.keys() - items.keys():  # its tasks were admitted by another control plane
        limit = admission.queue_limit(tenant, queue)
        items[queue] = {"queue": queue, "max_in_flight": limit.max_in_flight, "priority": limit.priority}
        items[queue] |= {"in_flight": 0, "held": 0}
    for queue, item in items.items():
        backlog = waiting.get(queue)
        item["depth"] = backlog.depth if backlog else 0
        item["oldest_age_seconds"] = round(backlog.oldest_age_seconds, 3) if backlog else 0.0
    return {
        "max_in_flight": admission.tenant_limit(tenant),
        "in_flight": in_flight,
        "held": held,
        "items": [items[queue] for queue in sorted(items)],
    }
