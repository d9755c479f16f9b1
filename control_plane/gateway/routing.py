"""The order in which one call tries a chain's deployments.

A chain is in rungs: deployments of the same ``order``. Rungs are tried in order; within a rung the
router prefers, by the weights of the settings, the faster (moving average of latency, relative to the
rung's slowest), the cheaper (input plus output price, relative to the rung's dearest) and the healthier
(error rate of the last minute, and a half-point for failures in a row). A deployment never measured counts
as the fastest, so that it gets measured.

Left out, with the reason why: a deployment cooling down, and one at its ``rpm`` or ``tpm`` limit for the
last minute. Pure: it reads the views it is given.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from control_plane.gateway.deployments import Deployment
from control_plane.gateway.health import View
from control_plane.gateway.settings import GatewaySettings


@dataclass(frozen=True, slots=True)
class Skipped:
    deployment: Deployment
    reason: str
    retry_after: float | None = None
    """Seconds until it may be tried again."""


def _left_out(deployment: Deployment, view: View) -> Skipped | None:
    spec = deployment.spec
    if view.cooling_seconds > 0:
        reason = f"cooling down for {view.cooling_seconds:.1f}s more after {view.health.reason}"
        return Skipped(deployment, reason, view.cooling_seconds)
    if spec.rpm is not None and view.calls >= spec.rpm:
        return Skipped(deployment, f"at its limit of {spec.rpm} requests a minute", 60.0)
    if spec.tpm is not None and view.tokens >= spec.tpm:
        return Skipped(deployment, f"at its limit of {spec.tpm} tokens a minute", 60.0)
    return None


def _scores(rung: Sequence[tuple[Deployment, View]], settings: GatewaySettings) -> list[float]:
    slowest = max((v.latency_ewma_ms or 0.0 for _, v in rung), default=0.0) or 1.0
    dearest = max((d.spec.prices.input + d.spec.prices.output for d, _ in rung), default=0.0) or 1.0
    return [
        settings.llm_weight_latency * (view.latency_ewma_ms or 0.0) / slowest
        + settings.llm_weight_cost * (d.spec.prices.input + d.spec.prices.output) / dearest
        + settings.llm_weight_health * (view.error_rate + (0.5 if view.health.failures else 0.0))
        for d, view in rung
    ]


def plan(
    deployments: Sequence[Deployment], view: Callable[[Deployment], View], settings: GatewaySettings
) -> tuple[list[Deployment], list[Skipped]]:
    """The deployments to try, in order, and those left out with why."""
    skipped: list[Skipped] = []
    rungs: dict[int, list[tuple[Deployment, View]]] = {}
    for deployment in deployments:
        seen = view(deployment)
        if (left := _left_out(deployment, seen)) is not None:
            skipped.append(left)
        else:
            rungs.setdefault(deployment.spec.order, []).append((deployment, seen))
    order: list[Deployment] = []
    for rung_order in sorted(rungs):
        rung = rungs[rung_order]
        if len(rung) == 1:
            order.append(rung[0][0])
            continue
        scores = _scores(rung, settings)
        ranked = sorted(zip(scores, rung, strict=True), key=lambda pair: (pair[0], pair[1][0].name))
        order.extend(deployment for _, (deployment, _) in ranked)
    return order, skipped
