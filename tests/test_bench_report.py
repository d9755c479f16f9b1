"""The bench report's rows and ratios (pure code): 3-step rows are compared with AgentFlow's 3-step workflow."""

from typing import Any

from bench.__main__ import Bench, arguments, render


class _Peer:
    def __init__(self, system: str) -> None:
        self.system = system


def _row(p50: float, rate: float) -> dict[str, float]:
    return {
        "p50_ms": p50,
        "p95_ms": p50 * 2,
        "p99_ms": p50 * 3,
        "tasks_per_s_1w": rate,
        "tasks_per_s_2w": rate,
        "drain_per_s_1w": rate,
        "drain_per_s_2w": rate,
    }


def _summary(rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    args = arguments().parse_args(["--repeat", "1", "--latency-runs", "10", "--tasks", "10", "--no-planners"])
    args.gateway_calls = 0
    bench = Bench.__new__(Bench)
    bench.args = args
    bench.peers = [_Peer("dbos"), _Peer("dbos-3step")]  # type: ignore[list-item]
    bench.samples = {system: {metric: [value] for metric, value in row.items()} for system, row in rows.items()}
    return bench.report()


def test_a_three_step_peer_is_compared_with_agentflows_three_step_workflow_and_the_raw_round_trip() -> None:
    summary = _summary(
        {
            "raw": _row(1.0, 1000),
            "agentflow": _row(4.0, 500),
            "agentflow-3step": _row(6.0, 200),
            "dbos": _row(8.0, 100),
            "dbos-3step": _row(24.0, 50),
        }
    )

    ratios = summary["ratios"]
    assert ratios["p50_latency_agentflow_to_dbos"] == 0.5
    assert ratios["p50_latency_agentflow_to_dbos-3step"] == 0.25
    assert ratios["sustained_1w_agentflow_to_dbos-3step"] == 4.0
    assert ratios["p50_latency_agentflow_3step_to_raw"] == 6.0
    table = render(summary)
    assert "AgentFlow, 3-step DAG of noop" in table
    assert "DBOS, 3-step workflow" in table
    assert "AgentFlow 3-step workflow / raw JetStream round trip: p50 latency 6.00x (target <= 6x)" in table
    assert "AgentFlow 3-step / DBOS 3-step: p50 latency 0.25x" in table


def test_the_report_names_its_topology() -> None:
    one = render(_summary({"raw": _row(1.0, 1000), "agentflow": _row(4.0, 500)}))
    assert "1 control plane (submits spread over them), one NATS node" in one
    args = arguments().parse_args(["--control-planes", "2", "--nats-cluster", "3", "--no-planners"])
    assert (args.control_planes, args.nats_cluster) == (2, 3)
