"""``make bench-control-planes``: AgentFlow's durable path with 1 and 2 control planes (2 workers each time),
on one NATS node and on a 3-node cluster with AgentFlow's streams at three replicas, in one table.

Each topology is one ``python -m bench`` run (its own stack, raw JetStream beside it on the same servers)
with the sandboxes, planners, gateway and agents left out; the topologies run one after the other, in the
order given, so that the machine's mood of the hour falls on all of them. The JSON reports go to
``bench/results/topology-<control planes>cp-<nodes>n.json``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bus.commands import CommandParser

TOPOLOGIES = ((1, 1), (2, 1), (1, 3), (2, 3))
"""(control planes, NATS nodes)."""
RESULTS = Path("bench/results")


def run(planes: int, nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    report = RESULTS / f"topology-{planes}cp-{nodes}n.json"
    argv = [sys.executable, "-m", "bench", "--sandbox-tasks", "0", "--no-planners", "--agent-runs", "0"]
    argv += ["--gateway-calls", "0", "--repeat", str(args.repeat), "--tasks", str(args.tasks)]
    argv += ["--latency-runs", str(args.latency_runs), "--control-planes", str(planes), "--nats-cluster", str(nodes)]
    argv += ["--json-file", str(report)]
    print(f"== {planes} control plane(s), {nodes} NATS node(s)", file=sys.stderr, flush=True)
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


def render(results: dict[tuple[int, int], dict[str, Any]]) -> list[str]:
    lines = [
        "AgentFlow by topology (median of each topology's repetitions; 2 workers in the sustained and drain columns)",
        "",
        f"{'control planes, NATS nodes':<28}{'workflow':<10}{'p50 ms':>8}{'p99 ms':>8}{'2 workers/s':>13}"
        f"{'drain 2w/s':>12}{'raw p50':>9}{'raw 2w/s':>10}{'CPU us/task: cp':>17}{'nats':>6}{'pg':>6}",
    ]
    for (planes, nodes), report in results.items():
        raw = report["raw"]
        for system, label in (("agentflow", "noop"), ("agentflow-3step", "3-step")):
            row = report[system]
            lines.append(
                f"{f'{planes} cp, {nodes} node(s)':<28}{label:<10}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}"
                f"{row['tasks_per_s_2w']:>13.0f}{row['drain_per_s_2w']:>12.0f}{raw['p50_ms']:>9.2f}"
                f"{raw['tasks_per_s_2w']:>10.0f}{row['cpu_us:control-plane']:>17.0f}{row['cpu_us:nats-server']:>6.0f}"
                f"{row['cpu_us:postgres']:>6.0f}"
            )
    return lines


def main() -> None:
    parser = CommandParser(prog="python -m bench.topologies", description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--repeat", metavar="N", type=int, default=3, help="Repetitions per topology (default 3).")
    parser.add_argument("--tasks", metavar="N", type=int, default=3000, help="Tasks per sustained or drain phase.")
    parser.add_argument("--latency-runs", metavar="N", type=int, default=300, help="Tasks one at a time.")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {(planes, nodes): run(planes, nodes, args) for planes, nodes in TOPOLOGIES}
    print("\n".join(render(results)))


if __name__ == "__main__":
    main()
