"""The gateway's settings: a group of the control plane's, read with the others at its start; every one of
them reloads (``Gateway.reconfigure``)."""

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bus.config import RELOADS, SettingsError


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    no_llm: int = field(default=0, metadata=RELOADS)
    """``AF_NO_LLM``: 1 routes every tier and model name to the built-in ``mock`` deployment (no credential,
    no network): zero-credential mode for demos and CI."""
    local_model_url: str = field(default="", metadata=RELOADS)
    """``AF_LOCAL_MODEL_URL``: the OpenAI-compatible base URL of the local model server (``local``
    deployments), e.g. ``http://127.0.0.1:8091/v1``."""
    llm_attempt_timeout_seconds: float = field(default=60.0, metadata=RELOADS)
    """``AF_LLM_ATTEMPT_TIMEOUT_SECONDS``: one attempt at one deployment, unless the deployment sets its own
    (a stream: until its first piece, then between pieces)."""
    llm_deadline_seconds: float = field(default=180.0, metadata=RELOADS)
    """``AF_LLM_DEADLINE_SECONDS``: one call, every failover attempt included."""
    llm_cooldown_failures: int = field(default=2, metadata=RELOADS)
    """``AF_LLM_COOLDOWN_FAILURES``: consecutive failures that put a deployment in cool-down (a 429 with
    Retry-After puts it there at once, for as long as it asks)."""
    llm_cooldown_base_seconds: float = field(default=5.0, metadata=RELOADS)
    """``AF_LLM_COOLDOWN_BASE_SECONDS``: the first cool-down; each one after a failed probe doubles it."""
    llm_cooldown_cap_seconds: float = field(default=300.0, metadata=RELOADS)
    """``AF_LLM_COOLDOWN_CAP_SECONDS``: the longest cool-down."""
    llm_weight_latency: float = field(default=1.0, metadata=RELOADS)
    """``AF_LLM_WEIGHT_LATENCY``: how much the router prefers the faster of a rung's deployments."""
    llm_weight_cost: float = field(default=1.0, metadata=RELOADS)
    """``AF_LLM_WEIGHT_COST``: how much it prefers the cheaper."""
    llm_weight_health: float = field(default=1.0, metadata=RELOADS)
    """``AF_LLM_WEIGHT_HEALTH``: how much it avoids those that failed lately."""


def check(settings: GatewaySettings) -> None:
    if settings.no_llm not in (0, 1):
        raise SettingsError("AF_NO_LLM: use 0 or 1")
    local = urlsplit(settings.local_model_url)
    if settings.local_model_url and (local.scheme not in ("http", "https") or not local.netloc):
        raise SettingsError(f"AF_LOCAL_MODEL_URL: expected an http(s) URL, got {settings.local_model_url!r}")
    for name in ("llm_attempt_timeout_seconds", "llm_deadline_seconds", "llm_cooldown_base_seconds"):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"AF_{name.upper()}: must be more than 0")
    if settings.llm_cooldown_cap_seconds < settings.llm_cooldown_base_seconds:
        raise SettingsError("AF_LLM_COOLDOWN_CAP_SECONDS: must be at least AF_LLM_COOLDOWN_BASE_SECONDS")
    if settings.llm_cooldown_failures < 1:
        raise SettingsError("AF_LLM_COOLDOWN_FAILURES: must be 1 or more")
    if min(settings.llm_weight_latency, settings.llm_weight_cost, settings.llm_weight_health) < 0:
        raise SettingsError("AF_LLM_WEIGHT_*: must be 0 or more")
