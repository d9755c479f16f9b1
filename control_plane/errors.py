"""Domain errors: what the control plane refuses and why, with no HTTP in them.

Each error carries a stable ``kind`` (the slug of the problem type the API answers), a human ``detail`` and the
offending ``field``; its class says what sort of refusal it is. The HTTP edge (``control_plane.api.problems``)
maps each class to a status, once, the way httpx maps transport errors at its edge.
"""

import re


class Refused(Exception):
    """A request the control plane will not carry out, as it stands."""

    def __init__(
        self,
        kind: str,
        detail: str,
        field: str | None = None,
        *,
        problems: list[dict[str, str]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.field = field
        self.problems = problems
        """Every problem of a document, each at its field, when there are several."""
        self.retry_after = retry_after
        """Seconds after which the same request may succeed."""


class Invalid(Refused):
    """The request or document is malformed or breaks a rule."""


class NotFound(Refused):
    """What the request names does not exist (for this tenant)."""


class Conflict(Refused):
    """The request contradicts what is already recorded."""


class Unauthenticated(Refused):
    """The caller could not be identified."""


class Forbidden(Refused):
    """The caller may not do this."""


class Throttled(Refused):
    """The caller is over a rate or a quota for now."""


class BudgetExceeded(Refused):
    """The tenant has spent its monthly budget, or the run its own: no model call until the budget is raised
    (or the month turns)."""


class Unavailable(Refused):
    """A part the request needs is down or busy; the same request may succeed later."""


class UpstreamFailed(Refused):
    """A service behind the control plane (a model provider) answered with garbage or refused the request's
    content: the same request would fail the same way."""


_NAMED_FIELD = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]*)`")


def field_from_msgspec(message: str) -> tuple[str, str | None]:
    """Split msgspec's ``"Expected `int`, got `str` - at `$.limits.cpu_seconds`"`` into detail and field.

    A missing or unknown field is named only in the sentence (and at the root there is no path at all),
    so it is appended to the path.
    """
    detail, sep, where = message.rpartition(" - at `")
    if not sep:
        detail, where = message, "$"
    path = where.rstrip("`")
    if named := _NAMED_FIELD.match(detail):
        path = f"{path}.{named.group(1)}"
    field = path[2:] if path.startswith("$.") else path.lstrip("$")
    return detail, field or None
