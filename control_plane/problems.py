"""Problems: the errors the API answers, as ``application/problem+json`` with a stable ``type``."""

import re
from typing import Any

import msgspec

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:agentflow:problem:"

_TITLES = {
    "invalid-name": "Invalid name",
    "bad-version": "Invalid version",
    "malformed-json": "Malformed JSON",
    "validation-error": "Invalid request",
    "input-schema-mismatch": "Input does not match the schema",
    "unknown-tool": "Unknown tool",
    "unknown-workflow": "Unknown workflow",
    "invalid-workflow": "Invalid workflow",
    "duplicate-version": "Version already exists with other content",
    "not-found": "Not found",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "rate-limited": "Too many requests",
    "quota-exceeded": "Quota exceeded",
    "tenant-exists": "Tenant already exists",
    "idempotency-conflict": "Idempotency key reused with another request",
    "run-finished": "Run already finished",
    "unknown-signal": "Unknown signal",
    "not-waiting": "Run is not waiting for this signal",
    "not-allowed": "Method not allowed",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
}


class ProblemBody(msgspec.Struct, frozen=True, omit_defaults=False):
    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    problems: list[dict[str, str]] | None = None


class Problem(Exception):
    """Raise from a handler to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        field: str | None = None,
        problems: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        assert slug in _TITLES, slug
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.field = field
        self.problems = problems
        self.headers = headers
        """Sent with the answer, e.g. ``Retry-After``."""

    def body(self) -> ProblemBody:
        return ProblemBody(
            type=_TYPE_PREFIX + self.slug,
            title=_TITLES[self.slug],
            status=self.status,
            detail=self.detail,
            field=self.field,
            problems=self.problems,
        )

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.body())  # type: ignore[no-any-return]


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
