"""The model gateway: every model call of AgentFlow, routed across tiers with failover, and recorded.

Deployments are documents (``documents``, stored per tenant or platform-wide); a caller names a tier or a
deployment (``deployments``); the router orders the chain by health, latency and cost (``routing``); each
attempt goes through one provider module (``providers``); health and cool-down are shared by every control
plane (``health``, over ``bus.model_health``); every call is recorded with all its attempts (``recorder``) and
metered once per model turn at its deployment's prices; a tenant or run over its budget is refused
(``budgets``); every call is counted and traced (``telemetry``).
``Gateway.chat`` / ``Gateway.stream`` / ``Gateway.embed`` are what agents and the HTTP edge call.
"""

from control_plane.gateway.gateway import CallContext, Gateway

__all__ = ["CallContext", "Gateway"]
