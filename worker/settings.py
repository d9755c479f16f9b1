"""Worker settings: one frozen object, loaded once and passed down."""

import os
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bus.config import SettingsError
from bus.config import load as load_layers
from bus.logs import check_log_format
from bus.subjects import InvalidName, check_name

__all__ = ["Settings", "SettingsError", "load"]


@dataclass(frozen=True, slots=True)
class Settings:
    nats_url: str = "nats://127.0.0.1:4222"
    """``AF_NATS_URL``: the NATS server with JetStream."""
    nats_user: str = ""
    """``AF_NATS_USER``: this process's NATS user, where the server requires one (``af up`` gives each
    process its own)."""
    nats_password: str = ""
    """``AF_NATS_PASSWORD``: that user's password."""
    tenant: str = "default"
    """``AF_TENANT``: the tenant whose tasks this worker runs."""
    queue: str = "default"
    """``AF_QUEUE``: the queue this worker pulls."""
    concurrency: int = 8
    """``AF_CONCURRENCY``: tasks run at once (and the most it holds un-acknowledged)."""
    sandbox: str = ""
    """``AF_SANDBOX``: ``runsc`` (gVisor; the default where runsc is installed), ``docker`` (gVisor through a
    Docker Engine: ``AF_DOCKER_HOST``, ``AF_DOCKER_RUNTIME``) or ``process`` (development only, no isolation;
    the default elsewhere, with a warning in the log)."""
    worker_id: str = ""
    """``AF_WORKER_ID``: defaults to ``<host>-<pid>``."""
    ack_wait_seconds: float = 30.0
    """``AF_ACK_WAIT_SECONDS``: how long a task may go without word from its worker before JetStream
    redelivers it (set when the queue's consumer is first created); the worker reports progress at a
    third of it while a tool runs."""
    drain_seconds: float = 30.0
    """``AF_DRAIN_SECONDS``: how long SIGTERM waits for tasks in flight before handing them back."""
    log_level: str = "info"
    """``AF_LOG_LEVEL``."""
    log_format: str = "auto"
    """``AF_LOG_FORMAT``: ``json`` (JSON lines), ``text``, or ``auto`` (text on a terminal, JSON otherwise)."""
    metrics_port: int = 0
    """``AF_METRICS_PORT``: the loopback port of this worker's Prometheus ``/metrics``; 0 picks a free one
    (logged at start and announced in the heartbeat)."""
    otlp_endpoint: str = ""
    """``AF_OTLP_ENDPOINT``: an OTLP/HTTP collector (``http://host:4318``) to send traces to; unset, none
    are recorded."""


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    settings = load_layers(Settings, "worker", flags, env)
    if not settings.sandbox:
        settings = Settings(**{**_as_dict(settings), "sandbox": "runsc" if shutil.which("runsc") else "process"})
    if not settings.worker_id:
        host = "".join(c if c.isalnum() else "-" for c in socket.gethostname().lower())[:40].strip("-") or "host"
        settings = Settings(**{**_as_dict(settings), "worker_id": f"{host}-{os.getpid()}"})
    try:
        check_name("tenant", settings.tenant)
        check_name("queue", settings.queue)
        check_name("worker id", settings.worker_id)
    except InvalidName as error:
        raise SettingsError(str(error)) from None
    if settings.concurrency < 1:
        raise SettingsError("AF_CONCURRENCY: must be at least 1")
    if not 0 <= settings.metrics_port <= 65535:
        raise SettingsError("AF_METRICS_PORT: must be a port number (0 picks a free one)")
    check_log_format(settings.log_format)
    return settings


def _as_dict(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in Settings.__dataclass_fields__}
