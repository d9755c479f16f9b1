"""Prometheus metrics of one worker, served on its own loopback port (``metrics_port``)."""

from collections.abc import Callable

from prometheus_client import Gauge

from bus.metrics import Tally, Timings

TASKS = Tally(
    "agentflow_worker_tasks",
    "Task attempts this worker finished, by outcome (ok or the error kind)",
    ["tenant", "queue", "tool", "outcome"],
)
QUEUE_WAIT = Timings(
    "agentflow_task_queue_wait_seconds",
    "From the task's arrival on its stream to a worker picking it up",
    ["tenant", "queue"],
)
EXECUTION = Timings(
    "agentflow_task_execution_seconds",
    "Execution of one task attempt on the worker (sandbox included)",
    ["tenant", "queue"],
)
REDELIVERIES = Tally(
    "agentflow_task_redeliveries",
    "Tasks this worker received more than once (a worker died or stalled holding them)",
    ["tenant", "queue"],
)
SANDBOX_STARTS = Tally(
    "agentflow_sandbox_starts",
    "Sandboxes started for tool calls; start is cold (a fresh sandbox) or warm (from a pool)",
    ["backend", "start"],
)
SANDBOX_FAILURES = Tally(
    "agentflow_sandbox_failures",
    "Sandboxed calls that could not start or were stopped by a limit (reason: start, timeout, crash, output)",
    ["backend", "reason"],
)

IN_FLIGHT = Gauge("agentflow_worker_in_flight_tasks", "Tasks this worker holds now", ["tenant", "queue"])
CONCURRENCY = Gauge("agentflow_worker_concurrency", "Tasks this worker runs at once at most", ["tenant", "queue"])


def track_load(in_flight: Callable[[], int], concurrency: int, tenant: str, queue: str) -> None:
    """Export the worker's in-flight tasks (read at scrape time, nothing to update per task) and its capacity."""
    IN_FLIGHT.labels(tenant, queue).set_function(lambda: float(in_flight()))
    CONCURRENCY.labels(tenant, queue).set(concurrency)
