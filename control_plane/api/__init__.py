"""The HTTP edge: the v1 routes, the gate every route passes (authentication, rate, RBAC), the JSON views of
stored rows, problem+json answers (domain errors mapped once, here) and the ASGI wrapper that counts and
traces every request. Nothing behind it knows about HTTP."""

from control_plane.api.observed import Observed
from control_plane.api.routes import create_app

__all__ = ["Observed", "create_app"]
