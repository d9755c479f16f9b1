"""The states of runs and of tasks: their one definition, for every server package.

Here, in ``bus``, because ``bus`` is the one package every server package may import (``registry`` may
import nothing else of ours) and because the states are part of the wire: the events published on
``af.<tenant>.events.<run_id>`` are named after them (``run.succeeded``, ``task.dead``...), and the API
answers them as spelled here. The module imports nothing but the standard library, so the pure planners
use it too. Clients (the SDK and the CLI) keep their own spelling: they never import the server.

Each is a ``StrEnum``: a state is its own spelling wherever it is written (PostgreSQL, JSON, a metric label,
an event type) and compares equal to it.

A task: ``queued → running → succeeded | failed | cancelled | dead`` (dead: attempts exhausted); a retry
queues it again, and a worker that hands it back (draining) turns it from running to queued.
A run: ``pending → running → succeeded | failed | cancelled``.
"""

from enum import StrEnum


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"


FINAL_RUN_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
"""A run in one of these changes no more."""
FINAL_TASK_STATES = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.DEAD})

MODEL_TOOL = "@model"
"""The built-in tool of a model turn (the catalog's and the worker's name): a worker asks the gateway for the
completion."""


def announces_start(builtin: str | None) -> bool:
    """Whether an attempt of a task of this built-in (None: a sandboxed tool) is told running when it starts,
    its worker's notice and its run's ``task.started`` event: sandboxed tools and model turns take long enough
    for "running, on this worker" to matter; a no-op does not."""
    return builtin is None or builtin == MODEL_TOOL


"""A task in one of these is finished: no attempt of it runs or will run."""
