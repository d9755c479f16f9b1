"""The exceptions of the SDK: one base, API problems mapped by their `type`, and local failures."""

from __future__ import annotations

import httpx

_PROBLEM_PREFIX = "urn:agentflow:problem:"


class AgentFlowError(Exception):
    """Base of every error the SDK raises; its message is one line meant for a person."""


class FileError(AgentFlowError):
    """A local file (tool, workflow, input or the embedded stack's state) is unreadable or malformed."""


class TransportError(AgentFlowError):
    """The API could not be reached or the connection broke."""

    def __init__(self, api_url: str, cause: Exception) -> None:
        self.api_url = api_url
        super().__init__(
            f"cannot reach the AgentFlow API at {api_url}: {str(cause) or type(cause).__name__}"
            " (is the stack up? af status shows it; af up starts it or what exited)"
        )


class WaitTimeout(AgentFlowError):
    """A run was still unfinished when a wait for it gave up."""


class APIError(AgentFlowError):
    """The API answered with an error (an RFC 9457 problem)."""

    def __init__(self, status: int, type: str, title: str, detail: str, field: str | None = None) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.field = field
        message = detail or title
        super().__init__(f"{message} (field: {field})" if field else message)

    @property
    def slug(self) -> str:
        """The problem's short name, e.g. `unknown-tool`."""
        return self.type.removeprefix(_PROBLEM_PREFIX)


class NotFound(APIError):
    """The named tool, workflow, run or version does not exist."""


class Conflict(APIError):
    """The request contradicts what exists: another content for a version, a reused idempotency key, a
    finished run."""


class ValidationFailed(APIError):
    """The request itself is invalid: a name, a version, the JSON, a spec or an input."""


class Unauthorized(APIError):
    """The token is missing, invalid or expired."""


class StaleLogin(Unauthorized):
    """The login stored for the API was refused when refreshed: issued by another stack at that URL, revoked
    or expired; the message says how to log in again."""

    def __init__(self, api_url: str, refused: Unauthorized) -> None:
        super().__init__(refused.status, refused.type, refused.title, refused.detail, refused.field)
        self.args = (
            f"the login stored for {api_url} is no longer valid ({refused.detail or refused.title}):"
            " log in again with `af login`, or forget it with `af logout`",
        )


class Forbidden(APIError):
    """The caller's role lacks the permission the request needs (the detail names it)."""


class RateLimited(APIError):
    """Over a request rate or a quota; `retry_after` is the seconds the API asked to wait."""

    retry_after: float | None = None


_BY_SLUG: dict[str, type[APIError]] = {
    "not-found": NotFound,
    "unknown-tool": NotFound,
    "unknown-agent": NotFound,
    "unknown-workflow": NotFound,
    "duplicate-version": Conflict,
    "idempotency-conflict": Conflict,
    "run-finished": Conflict,
    "ambiguous-id": Conflict,
    "invalid-name": ValidationFailed,
    "bad-version": ValidationFailed,
    "malformed-json": ValidationFailed,
    "validation-error": ValidationFailed,
    "input-schema-mismatch": ValidationFailed,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "rate-limited": RateLimited,
    "quota-exceeded": RateLimited,
}

# A proxy or an older server may answer without a problem type we know; the status still says enough.
_BY_STATUS: dict[int, type[APIError]] = {
    401: Unauthorized,
    403: Forbidden,
    429: RateLimited,
    404: NotFound,
    409: Conflict,
    400: ValidationFailed,
    422: ValidationFailed,
}


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the matching `APIError` unless the response is a success; its body must have been read."""
    if response.is_success:
        return
    status = response.status_code
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        reason = response.reason_phrase or "error"
        problem = {"title": reason, "detail": f"the API answered HTTP {status} {reason}"}
    type_ = str(problem.get("type") or "about:blank")
    cls = _BY_SLUG.get(type_.removeprefix(_PROBLEM_PREFIX)) or _BY_STATUS.get(status, APIError)
    field = problem.get("field")
    error = cls(
        status=status,
        type=type_,
        title=str(problem.get("title") or ""),
        detail=str(problem.get("detail") or ""),
        field=str(field) if field is not None else None,
    )
    if isinstance(error, RateLimited) and response.headers.get("Retry-After", "").isdigit():
        error.retry_after = float(response.headers["Retry-After"])
    raise error
