"""Deployments' health: adaptive cool-down, and the last minute of calls, shared by every control plane.

Cool-down (the shared ``ModelHealth`` of a deployment, changed by compare-and-set in ``af_models``):

- a failure of a cooling kind adds one to the consecutive failures; at ``llm_cooldown_failures`` of them the
  deployment cools down for ``base * 2^(n-1)`` seconds (capped), n counting the cool-downs in a row;
- a 429 with Retry-After cools it down at once, for at least as long as the provider asked;
- once its cool-down has passed the deployment is tried again (a probe): a failure then cools it down
  again at once, for twice as long; a success (a probe's or any call's) restores it fully.

The last minute (``Window``): each control plane counts its own calls per deployment (calls, errors,
tokens, latencies, and a moving average of latency), publishes it every ``PUBLISH_SECONDS`` and merges
what the others published into what routing and ``af models ls`` see. The ``Board`` holds both, mirrored
from the bucket by a watch, so that choosing a deployment reads only memory.
"""

import asyncio
import logging
import statistics
import time
import uuid
from collections import deque
from dataclasses import dataclass

from bus.messages import ModelHealth, ModelStats
from bus.model_health import HealthBucket
from control_plane.gateway.failures import Failure
from control_plane.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
PUBLISH_SECONDS = 2.0
STALE_SECONDS = 10.0
"""Another control plane's stats older than this are left out (it stopped, or lost the bus)."""
EWMA_ALPHA = 0.2
_LATENCIES_PER_SECOND = 64


def after_failure(health: ModelHealth, failure: Failure, now: float, settings: GatewaySettings) -> ModelHealth:
    """The health after one more failed attempt."""
    failures = health.failures + 1
    probe_failed = health.cooldowns > 0 and health.until <= now
    asked = failure.retry_after if failure.kind == "rate-limited" else None
    if asked is None and not probe_failed and failures < settings.llm_cooldown_failures:
        return ModelHealth(failures=failures, cooldowns=health.cooldowns, until=health.until, at=now)
    cooldowns = health.cooldowns + 1
    backoff = min(settings.llm_cooldown_cap_seconds, settings.llm_cooldown_base_seconds * 2 ** (cooldowns - 1))
    seconds = max(asked, 0.0) if asked is not None else backoff
    # what put it there first: `af models ls` shows the reason cut to fit its column
    reason = f"Retry-After {asked:g}s: {failure}" if asked is not None else f"{failures} in a row: {failure}"
    return ModelHealth(failures=failures, cooldowns=cooldowns, until=now + seconds, reason=reason[:300], at=now)


def restored(health: ModelHealth) -> bool:
    return health.failures == 0 and health.cooldowns == 0 and health.until == 0.0


class Window:
    """One deployment's calls in the last minute at this control plane, by second."""

    def __init__(self) -> None:
        self._seconds: deque[list[float]] = deque()
        """Per second: [second, calls, errors, tokens]."""
        self._latencies: deque[tuple[int, list[float]]] = deque()
        self.ewma_ms: float | None = None
        self.changed = False

    def _bucket(self, now: float) -> list[float]:
        second = int(now)
        self._drop(second)
        if not self._seconds or self._seconds[-1][0] != second:
            self._seconds.append([second, 0, 0, 0])
            self._latencies.append((second, []))
        return self._seconds[-1]

    def _drop(self, second: int) -> None:
        while self._seconds and self._seconds[0][0] <= second - WINDOW_SECONDS:
            self._seconds.popleft()
            self._latencies.popleft()

    def add(self, now: float, *, ok: bool, latency_ms: float, tokens: int) -> None:
        bucket = self._bucket(now)
        bucket[1] += 1
        bucket[3] += tokens
        if not ok:
            bucket[2] += 1
            return
        latencies = self._latencies[-1][1]
        if len(latencies) < _LATENCIES_PER_SECOND:
            latencies.append(latency_ms)
        self.ewma_ms = latency_ms if self.ewma_ms is None else self.ewma_ms + EWMA_ALPHA * (latency_ms - self.ewma_ms)
        self.changed = True

    def add_tokens(self, now: float, tokens: int) -> None:
        self._bucket(now)[3] += tokens

    def stats(self, now: float, *, median: bool = True) -> ModelStats:
        """The last minute; ``median=False`` leaves out the median latency (routing needs none)."""
        self._drop(int(now))
        latencies = [ms for _, values in self._latencies for ms in values] if median else []
        return ModelStats(
            calls=int(sum(b[1] for b in self._seconds)),
            errors=int(sum(b[2] for b in self._seconds)),
            tokens=int(sum(b[3] for b in self._seconds)),
            latency_p50_ms=statistics.median(latencies) if latencies else None,
            latency_ewma_ms=self.ewma_ms,
            at=now,
        )


@dataclass(frozen=True, slots=True)
class View:
    """A deployment as routing and ``af models ls`` see it: its shared health and the last minute of calls
    at every control plane (the median latency of several control planes is their call-weighted mean of
    medians: an approximation)."""

    health: ModelHealth
    cooling_seconds: float
    calls: int
    errors: int
    tokens: int
    latency_p50_ms: float | None
    latency_ewma_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    @property
    def state(self) -> str:
        if self.cooling_seconds > 0:
            return "cooling-down"
        if self.health.cooldowns > 0:
            return "probing"
        return "degraded" if self.health.failures > 0 else "healthy"


def _weighted(values: list[tuple[float | None, int]]) -> float | None:
    known = [(value, max(weight, 1)) for value, weight in values if value is not None]
    if not known:
        return None
    return sum(value * weight for value, weight in known) / sum(weight for _, weight in known)


class Board:
    """What this control plane knows of every deployment's health, by deployment key (``bus.model_health``)."""

    def __init__(self, bucket: HealthBucket, settings: GatewaySettings) -> None:
        self._bucket = bucket
        self._settings = settings
        self.source = uuid.uuid4().hex[:12]
        self._health: dict[str, ModelHealth] = {}
        self._others: dict[str, dict[str, ModelStats]] = {}
        self._own: dict[str, Window] = {}

    def reconfigure(self, settings: GatewaySettings) -> None:
        """Reloaded settings: the cool-downs decided from now on go by them."""
        self._settings = settings

    # --- the mirror ------------------------------------------------------------------------------------

    def _on_health(self, key: str, health: ModelHealth | None) -> None:
        if health is None:
            self._health.pop(key, None)
        elif health.at >= self._health.get(key, ModelHealth()).at:
            self._health[key] = health

    def _on_stats(self, source: str, key: str, stats: ModelStats | None) -> None:
        if source == self.source:
            return
        if stats is None:
            self._others.get(key, {}).pop(source, None)
        else:
            self._others.setdefault(key, {})[source] = stats

    async def run(self, stop: asyncio.Event) -> None:
        """Mirror the bucket and publish this control plane's stats until ``stop``; then withdraw them."""
        mirror = asyncio.create_task(self._bucket.mirror(self._on_health, self._on_stats), name="model-health")
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), PUBLISH_SECONDS)
                except TimeoutError:
                    await self._publish()
        finally:
            mirror.cancel()
            await asyncio.gather(mirror, return_exceptions=True)
            try:
                await self._bucket.drop_stats(self.source, list(self._own))
            except Exception as error:
                log.warning("cannot withdraw this control plane's model stats: %s", error)

    async def _publish(self) -> None:
        now = time.time()
        for key, window in list(self._own.items()):
            if not window.changed:
                continue
            window.changed = False
            try:
                await self._bucket.put_stats(self.source, key, window.stats(now))
            except Exception as error:
                log.warning("cannot publish the model stats of %s: %s", key, error)

    # --- what calls report -----------------------------------------------------------------------------

    def _window(self, key: str) -> Window:
        window = self._own.get(key)
        if window is None:
            window = self._own[key] = Window()
        return window

    async def succeeded(self, key: str, latency_ms: float, tokens: int) -> None:
        self._window(key).add(time.time(), ok=True, latency_ms=latency_ms, tokens=tokens)
        if restored(self._health.get(key, ModelHealth())):
            return
        self._health[key] = await self._bucket.change(
            key, lambda h: None if restored(h) else ModelHealth(at=time.time())
        )

    async def failed(self, key: str, failure: Failure, latency_ms: float) -> None:
        now = time.time()
        self._window(key).add(now, ok=False, latency_ms=latency_ms, tokens=0)
        if not failure.cools:
            return
        self._health[key] = await self._bucket.change(
            key, lambda health: after_failure(health, failure, time.time(), self._settings)
        )

    def count_tokens(self, key: str, tokens: int) -> None:
        """Tokens of a stream, known once it ended (its call was counted when it began)."""
        self._window(key).add_tokens(time.time(), tokens)

    # --- what routing and views read -------------------------------------------------------------------

    def view(self, key: str, now: float | None = None, *, median: bool = True) -> View:
        now = time.time() if now is None else now
        health = self._health.get(key, ModelHealth())
        own = self._own[key].stats(now, median=median) if key in self._own else None
        stats = [s for s in self._others.get(key, {}).values() if now - s.at < STALE_SECONDS]
        if own is not None:
            stats.append(own)
        return View(
            health=health,
            cooling_seconds=max(0.0, health.until - now),
            calls=sum(s.calls for s in stats),
            errors=sum(s.errors for s in stats),
            tokens=sum(s.tokens for s in stats),
            latency_p50_ms=_weighted([(s.latency_p50_ms, s.calls) for s in stats]),
            latency_ewma_ms=_weighted([(s.latency_ewma_ms, s.calls) for s in stats]),
        )
