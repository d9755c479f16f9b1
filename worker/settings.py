"""Worker settings: one frozen object, loaded once and passed down (the sandbox's share to open_backend)."""

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bus.config import RELOADS, ProcessSettings, SettingsError
from bus.config import load as load_layers
from bus.reload import check as check_process
from bus.subjects import InvalidName, check_name
from sandbox import SandboxSettings

__all__ = ["Settings", "SettingsError", "load"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(ProcessSettings):
    """Everything the worker process reads from its surroundings, beside what every process reads."""

    tenant: str = "default"
    """``AF_TENANT``: the tenant whose tasks this worker runs."""
    queue: str = "default"
    """``AF_QUEUE``: the queue this worker pulls."""
    concurrency: int = field(default=8, metadata=RELOADS)
    """``AF_CONCURRENCY``: tasks run at once (and the most it holds un-acknowledged)."""
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    """The sandbox backend and what it needs: ``AF_SANDBOX`` (``runsc``, ``docker`` or ``process``),
    ``AF_RUNSC_ROOT``, ``AF_RUNSC_WARM``, ``AF_DOCKER_HOST``, ``AF_DOCKER_RUNTIME`` (see
    sandbox.SandboxSettings)."""
    worker_id: str = ""
    """``AF_WORKER_ID``: defaults to ``<host>-<pid>``."""
    ack_wait_seconds: float = 30.0
    """``AF_ACK_WAIT_SECONDS``: how long a task may go without word from its worker before JetStream
    redelivers it (set on the queue's consumer at every start: the worker that starts last sets it for the
    queue); the worker reports progress at a third of it while a tool runs."""
    drain_seconds: float = field(default=30.0, metadata=RELOADS)
    """``AF_DRAIN_SECONDS``: how long SIGTERM waits for tasks in flight before handing them back."""
    model_turn_seconds: float = field(default=240.0, metadata=RELOADS)
    """``AF_MODEL_TURN_SECONDS``: how long an agent's model turn waits for the gateway's answer before it is
    tried again (the gateway's own deadline for one call is shorter)."""
    metrics_port: int = 0
    """``AF_METRICS_PORT``: the loopback port of this worker's Prometheus ``/metrics``; 0 picks a free one
    (logged at start and announced in the heartbeat)."""


def default_worker_id(pid: int) -> str:
    """``<host>-<pid>``: the id of the worker process ``pid`` on this machine when none is given."""
    host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:40].strip("-") or "host"
    return f"{host}-{pid}"


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    settings = load_layers(Settings, "worker", flags, env)
    if not settings.worker_id:
        settings = dataclasses.replace(settings, worker_id=default_worker_id(os.getpid()))
    try:
        check_name("tenant", settings.tenant)
        check_name("queue", settings.queue)
        check_name("worker id", settings.worker_id)
    except InvalidName as error:
        raise SettingsError(str(error)) from None
    if settings.concurrency < 1:
        raise SettingsError("AF_CONCURRENCY: must be at least 1")
    if settings.drain_seconds < 0:
        raise SettingsError("AF_DRAIN_SECONDS: must be 0 or more")
    if settings.model_turn_seconds <= 0:
        raise SettingsError("AF_MODEL_TURN_SECONDS: must be more than 0")
    if not 0 <= settings.metrics_port <= 65535:
        raise SettingsError("AF_METRICS_PORT: must be a port number (0 picks a free one)")
    if settings.sandbox.runsc_warm < 0:
        raise SettingsError("AF_RUNSC_WARM: must be 0 (no warm sandboxes) or more")
    check_process(settings)
    return settings
