"""The HTTP edge: the v1 routes, the gate every route passes (authentication, rate, RBAC), the JSON views of
stored rows, problem+json answers (domain errors mapped once, here) and the ASGI wrapper that counts and
traces every request. Nothing behind it knows about HTTP."""

from control_plane.api.app import create_app
from control_plane.api.observed import Observed

__all__ = ["Observed", "create_app"]
