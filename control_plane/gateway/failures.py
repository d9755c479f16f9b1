"""How an attempt at one deployment failed, and what the router makes of it.

Every provider turns what went wrong into one ``Failure`` of a fixed ``kind``: the router moves down its chain
on the kinds that say "this deployment, now" (``FAILOVER``), fails the call at once on the kinds that say
"this request" (a 400-class content error), and goes to a deployment with a larger window on
``context-length``. A failure of ``COOLING`` kinds counts towards the deployment's cool-down.
"""

from typing import Literal

Kind = Literal[
    "rate-limited",  # 429
    "server-error",  # 5xx
    "timeout",  # no answer within the attempt's time
    "refused",  # no connection, or closed without an answer
    "garbage",  # an answer that is not the protocol's
    "auth",  # 401, 403 or 404: the deployment's key, account or model is wrong
    "context-length",  # the prompt does not fit the model's window
    "content",  # any other 400-class answer: the request itself is refused
    "stream-cut",  # a stream that ended before its end
    "credential",  # the deployment's secret is missing
]
FAILOVER: frozenset[str] = frozenset(
    {"rate-limited", "server-error", "timeout", "refused", "garbage", "auth", "credential"}
)
COOLING: frozenset[str] = FAILOVER - {"credential"}


class Failure(Exception):
    """One attempt's failure: its kind, a detail safe to show (no secret, no prompt), the provider's status
    and the seconds it asked us to wait (Retry-After)."""

    def __init__(self, kind: Kind, detail: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.kind: Kind = kind
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    def without(self, secret: str | None) -> "Failure":
        """This failure with ``secret`` (the key the attempt sent) cut out of its detail: a provider may
        quote the key it was given in its error, and the detail is shown and recorded."""
        if not secret or secret not in self.detail:
            return self
        detail = self.detail.replace(secret, "[redacted]")
        return Failure(self.kind, detail, status=self.status, retry_after=self.retry_after)

    @property
    def fails_over(self) -> bool:
        return self.kind in FAILOVER

    @property
    def cools(self) -> bool:
        return self.kind in COOLING

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.kind}{status}: {self.detail}"
