"""Prometheus metric families cheap enough for the hot path, and the loopback ``/metrics`` server.

Lives beside the wire because both processes (control plane, worker) count the same way. prometheus_client's
own Counter and Histogram take a lock on every update; these families are plain dict updates made on the
event loop thread and read at scrape time (a dict copy is atomic under the GIL), so a task costs well under a
microsecond per metric. Label values are bounded (tenant, queue, tool, state, ...): never a run or task id.
"""

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds, from sub-millisecond bus hops to minute-long tool calls."""

Labels = tuple[str, ...]


class _Family(Collector):
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        REGISTRY.register(self)

    def describe(self) -> Iterable[Metric]:
        # Described as empty so registration does not call collect() before anything was counted.
        return []


class Tally(_Family):
    """A counter family (``name`` without the ``_total`` suffix, which the exposition adds)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels)
        self.values: dict[Labels, float] = {}

    def add(self, key: Labels, amount: float = 1) -> None:
        values = self.values
        values[key] = values.get(key, 0) + amount

    def add_all(self, counts: Mapping[Labels, float]) -> None:
        for key, amount in counts.items():
            self.add(key, amount)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in dict(self.values).items():
            family.add_metric(key, value)
        yield family


class Timings(_Family):
    """A histogram family of durations in seconds."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        super().__init__(name, documentation, labels)
        self.buckets = tuple(buckets)
        self.values: dict[Labels, tuple[list[int], list[float]]] = {}
        """Per label set: the count in each bucket (not cumulative; the last is +Inf) and [sum]."""

    def observe(self, key: Labels, seconds: float) -> None:
        entry = self.values.get(key)
        if entry is None:
            entry = self.values[key] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect_left(self.buckets, seconds)] += 1
        entry[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        bounds = [*(repr(float(b)) for b in self.buckets), "+Inf"]
        for key, (counts, total) in dict(self.values).items():
            cumulative, running = [], 0
            for bound, count in zip(bounds, list(counts), strict=True):
                running += count
                cumulative.append((bound, float(running)))
            family.add_metric(list(key), cumulative, total[0])
        yield family


class Levels(_Family):
    """A gauge family replaced as a whole by its sampler, so series that went away disappear."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels)
        self.values: dict[Labels, float] = {}

    def replace(self, values: dict[Labels, float]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        yield family


def serve(port: int) -> int:
    """Serve ``/metrics`` on 127.0.0.1:``port`` (0: a free port) from a daemon thread; returns the port."""
    server, _ = start_http_server(port, addr="127.0.0.1")
    return int(server.server_port)
