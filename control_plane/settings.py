"""Control plane settings: one frozen object, loaded once and passed down."""

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bus.config import RELOADS, ProcessSettings, SettingsError
from bus.config import load as load_layers
from bus.reload import check as check_process
from control_plane.gateway.settings import GatewaySettings
from control_plane.gateway.settings import check as check_gateway
from control_plane.security.master_key import FILE_NAME as MASTER_KEY_FILE_NAME
from control_plane.stack.settings import default_home

__all__ = ["Settings", "SettingsError", "load"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings(ProcessSettings):
    """Everything the control plane process reads from its surroundings, beside what every process reads."""

    database_url: str = ""
    """``AF_DATABASE_URL``: PostgreSQL, e.g. ``postgresql://user@127.0.0.1:5432/agentflow``. Required."""
    host: str = "127.0.0.1"
    """``AF_HOST``: the address the HTTP API listens on."""
    port: int = 8080
    """``AF_PORT``: the HTTP API's port."""
    bootstrap_key_file: str = ""
    """``AF_BOOTSTRAP_KEY_FILE``: a file holding the local admin key of tenant ``default`` (written by ``af up``)."""
    max_in_flight_per_tenant: int = field(default=20_000, metadata=RELOADS)
    """``AF_MAX_IN_FLIGHT_PER_TENANT``: the most tasks any one tenant may have on the bus at once (0: no
    ceiling); its further tasks wait, held in PostgreSQL, so that a flood from one tenant cannot crowd out
    the others. A tenant's own limit (``PUT /v1/limits``) may only be lower."""
    access_token_seconds: int = 900
    """``AF_ACCESS_TOKEN_SECONDS``: how long an access token (JWT) is valid."""
    refresh_token_seconds: int = 30 * 24 * 3600
    """``AF_REFRESH_TOKEN_SECONDS``: how long an unused refresh token is valid."""
    signing_key_rotation_hours: int = 7 * 24
    """``AF_SIGNING_KEY_ROTATION_HOURS``: a control plane starting with an older newest signing key adds one."""
    requests_per_second: float = field(default=2000.0, metadata=RELOADS)
    """``AF_REQUESTS_PER_SECOND``: each tenant's request rate (and burst) per control plane, unless the tenant
    sets its own."""
    max_concurrent_runs: int = field(default=100_000, metadata=RELOADS)
    """``AF_MAX_CONCURRENT_RUNS``: each tenant's unfinished runs at most, unless the tenant sets its own."""
    auth_failures_per_minute: int = field(default=10, metadata=RELOADS)
    """``AF_AUTH_FAILURES_PER_MINUTE``: failed token requests one source address may make before 429s."""
    sse_keepalive_seconds: float = field(default=15.0, metadata=RELOADS)
    """``AF_SSE_KEEPALIVE_SECONDS``: how long a run's event stream may stay quiet before it sends a comment,
    so that a proxy does not take a long step's silence for a dead connection."""
    master_key: str = field(default="", repr=False)
    """``AF_MASTER_KEY``: the master key of the secrets store, 32 bytes as base64 (``openssl rand -base64
    32``); unset: the key file's."""
    master_key_file: str = ""
    """``AF_MASTER_KEY_FILE``: the file holding the master key (mode 0600), made with a new random key at
    the first start; default ``$AF_HOME/master.key`` (``AF_HOME`` as ``af up`` reads it)."""
    nats_replicas: int = 1
    """``AF_NATS_REPLICAS``: how many copies of each of AgentFlow's streams and KV buckets JetStream keeps (1 to
    5, at most the cluster's size): 3 on a 3-node cluster, so that losing one node loses no task or result."""
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    """The model gateway's (``control_plane.gateway.settings``)."""


def load(flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    settings = load_layers(Settings, "control_plane", flags, env)
    if not settings.master_key_file:
        settings = replace(settings, master_key_file=str(default_home(env) / MASTER_KEY_FILE_NAME))
    if not settings.database_url:
        raise SettingsError("AF_DATABASE_URL is not set: the control plane needs PostgreSQL")
    if settings.max_in_flight_per_tenant < 0:
        raise SettingsError("AF_MAX_IN_FLIGHT_PER_TENANT: must be 0 (no ceiling) or more")
    if not 1 <= settings.nats_replicas <= 5:
        raise SettingsError("AF_NATS_REPLICAS: must be 1 to 5 (JetStream keeps at most 5 copies)")
    if settings.requests_per_second <= 0:
        raise SettingsError("AF_REQUESTS_PER_SECOND: must be more than 0")
    if settings.max_concurrent_runs < 0:
        raise SettingsError("AF_MAX_CONCURRENT_RUNS: must be 0 or more")
    if settings.auth_failures_per_minute < 1:
        raise SettingsError("AF_AUTH_FAILURES_PER_MINUTE: must be 1 or more")
    if settings.sse_keepalive_seconds <= 0:
        raise SettingsError("AF_SSE_KEEPALIVE_SECONDS: must be more than 0")
    check_process(settings)
    check_gateway(settings.gateway)
    return settings
