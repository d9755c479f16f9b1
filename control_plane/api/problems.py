"""Problems: the errors the API answers, as ``application/problem+json`` with a stable ``type``."""

import math
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from control_plane.errors import (
    BudgetExceeded,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Refused,
    Throttled,
    Unauthenticated,
    Unavailable,
    UpstreamFailed,
)

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
    "unknown-agent": "Unknown agent",
    "invalid-workflow": "Invalid workflow",
    "duplicate-version": "Version already exists with other content",
    "not-found": "Not found",
    "ambiguous-id": "The start of an id that several ids share",
    "unauthorized": "Unauthorized",
    "forbidden": "Forbidden",
    "rate-limited": "Too many requests",
    "quota-exceeded": "Quota exceeded",
    "tenant-exists": "Tenant already exists",
    "last-platform-admin": "The last platform-admin key",
    "idempotency-conflict": "Idempotency key reused with another request",
    "run-finished": "Run already finished",
    "unknown-signal": "Unknown signal",
    "not-waiting": "Run is not waiting for this signal",
    "not-an-agent-run": "Not an agent's run",
    "no-worker": "No live worker serves the queue",
    "not-allowed": "Method not allowed",
    "unavailable": "Service unavailable",
    "internal": "Internal error",
    "invalid-model": "Invalid model deployment",
    "model-not-found": "Unknown model or tier",
    "no-healthy-deployment": "No healthy model deployment",
    "provider-error": "The model provider failed",
    "stream-interrupted": "The model's stream was interrupted",
    "context-length-exceeded": "The prompt exceeds every model's context window",
    "secret-not-found": "Unknown secret",
    "master-key-in-environment": "The master key is set in the environment",
    "master-key-changed": "The master key changed",
    "secret-unreadable": "The secret does not open",
    "budget-exceeded": "Budget exceeded",
}


# Most specific first: a subclass of another refusal answers with its own status.
_STATUSES: tuple[tuple[type[Refused], int], ...] = (
    (Invalid, 422),
    (NotFound, 404),
    (Conflict, 409),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (Throttled, 429),
    (BudgetExceeded, 402),
    (Unavailable, 503),
    (UpstreamFailed, 502),
    (Refused, 400),
)


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

    @classmethod
    def of(cls, refusal: Refused) -> "Problem":
        """The answer to a domain error: its class decides the status, the rest carries over."""
        status = next(status for kind, status in _STATUSES if isinstance(refusal, kind))
        headers = None
        if refusal.retry_after is not None:
            headers = {"Retry-After": str(max(1, math.ceil(refusal.retry_after)))}
        return cls(status, refusal.kind, refusal.detail, refusal.field, refusal.problems, headers)

    def as_dict(self) -> dict[str, Any]:
        return msgspec.to_builtins(self.body())  # type: ignore[no-any-return]


def documented(*answers: tuple[int, str]) -> dict[int, ResponseSpec]:
    """The problems a route answers, as its OpenAPI responses: per status, the problem document and the
    ``type``s it may carry."""
    slugs: dict[int, list[str]] = {}
    for status, slug in answers:
        assert slug in _TITLES, slug
        slugs.setdefault(status, []).append(slug)
    return {
        status: ResponseSpec(
            data_container=ProblemBody,
            generate_examples=False,
            media_type=PROBLEM_MEDIA_TYPE,
            description="; ".join(f"{_TYPE_PREFIX}{slug}: {_TITLES[slug]}" for slug in listed),
        )
        for status, listed in slugs.items()
    }
