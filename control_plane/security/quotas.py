"""Per-tenant limits (request rate, concurrent runs) and the brake on guessing API keys (failed token
exchanges per source address). Buckets live in memory. Each control plane admits its share of a tenant's
request rate, the rate over the live control planes (``shares``), so that together they admit the rate when
a balancer spreads requests evenly; the brake is kept per control plane."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from control_plane.errors import Throttled
from registry import tenants
from registry.db import Pool

# Tenant settings (their overrides of the defaults) and active-run counts are read again this often.
_REFRESH_SECONDS = 2.0
_MAX_BUCKETS = 100_000


class TokenBucket:
    """``rate`` tokens a second, at most ``capacity`` saved up."""

    __slots__ = ("capacity", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.updated = time.monotonic()

    def _fill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def take(self) -> float:
        """Take a token: 0 when there was one, else the seconds until there will be."""
        self._fill()
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def wait(self) -> float:
        """The seconds until a token is available (0: now), taking none."""
        self._fill()
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


@dataclass(frozen=True, slots=True)
class _Limits:
    requests_per_second: float
    max_concurrent_runs: int
    read_at: float


def _alone() -> int:
    return 1


class TenantQuotas:
    def __init__(
        self, pool: Pool, requests_per_second: float, max_concurrent_runs: int, shares: Callable[[], int] = _alone
    ) -> None:
        self._pool = pool
        self._shares = shares
        self._default_rate = requests_per_second
        self._default_runs = max_concurrent_runs
        self._limits: dict[str, _Limits] = {}
        self._buckets: dict[str, TokenBucket] = {}
        # tenant -> (runs not finished when last counted, runs started here since, counted at)
        self._active: dict[str, tuple[int, int, float]] = {}
        # Tenants being counted now: meanwhile, concurrent requests go by the last count instead of piling up
        # the same query.
        self._counting: set[str] = set()

    def set_defaults(self, requests_per_second: float, max_concurrent_runs: int) -> None:
        """The defaults reloaded: every tenant's limits are read again at its next request."""
        self._default_rate = requests_per_second
        self._default_runs = max_concurrent_runs
        self._limits.clear()

    async def _of(self, tenant: str) -> _Limits:
        limits = self._limits.get(tenant)
        if limits is None or time.monotonic() - limits.read_at > _REFRESH_SECONDS:
            row = await tenants.get_tenant(self._pool, tenant)
            rate = row.requests_per_second if row and row.requests_per_second else self._default_rate
            runs = row.max_concurrent_runs if row and row.max_concurrent_runs is not None else self._default_runs
            limits = _Limits(rate, runs, time.monotonic())
            self._limits[tenant] = limits
        return limits

    async def admit_request(self, tenant: str) -> None:
        """429 when ``tenant`` sends requests faster than its rate."""
        limits = await self._of(tenant)
        bucket = self._buckets.get(tenant)
        share = limits.requests_per_second / self._shares()
        if bucket is None or bucket.rate != share:
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[tenant] = TokenBucket(share, max(1.0, share))
        wait = bucket.take()
        if wait:
            raise Throttled(
                "rate-limited",
                f"tenant {tenant} is over its rate of {limits.requests_per_second:g} requests a second",
                retry_after=wait,
            )

    async def admit_runs(self, tenant: str, count: int) -> None:
        """429 when starting ``count`` more runs would put ``tenant`` over its concurrent runs; else counts them."""
        limits = await self._of(tenant)
        if time.monotonic() - self._active.get(tenant, (0, 0, -math.inf))[2] > _REFRESH_SECONDS and (
            tenant not in self._counting or tenant not in self._active
        ):
            self._counting.add(tenant)
            try:
                counted = await tenants.active_runs(self._pool, tenant)
            finally:
                self._counting.discard(tenant)
            self._active[tenant] = (counted, 0, time.monotonic())
        counted, started, at = self._active[tenant]
        if counted + started + count > limits.max_concurrent_runs:
            raise Throttled(
                "quota-exceeded",
                f"tenant {tenant} has {counted + started} unfinished runs of at most {limits.max_concurrent_runs}",
                retry_after=_REFRESH_SECONDS,
            )
        self._active[tenant] = (counted, started + count, at)


class FailureBrake:
    """Failed attempts per source address: ``per_minute`` of them, then 429 until the bucket refills."""

    def __init__(self, per_minute: int) -> None:
        self._per_minute = per_minute
        self._buckets: dict[str, TokenBucket] = {}

    def set_per_minute(self, per_minute: int) -> None:
        """Reloaded: the brake of every source from now on, those counting already included."""
        self._per_minute = per_minute
        for bucket in self._buckets.values():
            bucket.rate, bucket.capacity = per_minute / 60, per_minute

    def check(self, source: str) -> None:
        bucket = self._buckets.get(source)
        if bucket is not None and (wait := bucket.wait()):
            raise Throttled(
                "rate-limited",
                f"too many failed attempts from {source}; try again later",
                retry_after=wait,
            )

    def failed(self, source: str) -> None:
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) > _MAX_BUCKETS:
                self._buckets.clear()
            bucket = self._buckets[source] = TokenBucket(self._per_minute / 60, self._per_minute)
        bucket.take()
