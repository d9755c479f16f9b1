"""The agents phase of ``af bench``: the platform's own time per agent turn, the model's excluded.

The model is the in-process ``mock`` provider at zero latency, scripted per agent, and the tool is the
built-in ``noop``, so what is measured is AgentFlow: the run's submit, each turn's task on the bus, the
worker asking the gateway over NATS, the gateway's record, the result folded and the next turn planned, each
tool call's task, and the final state committed. Three agents, each run one at a time:

- ``plain``: one turn that answers at once (a turn without tools);
- ``two-tools``: a turn asking for two ``noop`` calls at once, then a turn that answers (per turn: half);
- ``ten-turns``: nine turns each asking for one ``noop`` call, then one that answers (per turn: a tenth).
"""

from typing import Any

import httpx

from bench.agentflow_path import AgentFlowClient
from bench.stats import percentile

TOOL_CALL = {"name": "noop", "arguments": {"n": 1}}
AGENTS: dict[str, tuple[list[dict[str, Any]], int]] = {
    "plain": ([{"content": "done"}], 1),
    "two-tools": ([{"tool_calls": [TOOL_CALL, TOOL_CALL]}, {"content": "done"}], 2),
    "ten-turns": ([*({"tool_calls": [TOOL_CALL]} for _ in range(9)), {"content": "done"}], 10),
}
"""Each agent: its model's script, and its number of turns."""


async def register(api_url: str, key: str) -> None:
    """Each agent with a mock deployment of its own, in the tenant of ``key``."""
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        for name, (turns, _) in AGENTS.items():
            model = {"name": f"bench-{name}", "provider": "mock", "options": {"turns": turns}}
            (await http.post("/v1/models", json=model)).raise_for_status()
            agent = {
                "name": f"bench-{name}",
                "version": "1",
                "instructions": "Answer.",
                "model": f"bench-{name}",
                "tools": ["noop"],
                "limits": {"max_turns": 12},
            }
            answer = await http.post("/v1/agents", json=agent)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"registering agent bench-{name} answered {answer.status_code}: {answer.text}")


async def measure(api_url: str, nats_url: str, key: str, runs: int) -> dict[str, dict[str, float]]:
    """For each agent: p50/p99 of the run end to end and per turn (ms)."""
    figures: dict[str, dict[str, float]] = {}
    for name, (_, turns) in AGENTS.items():
        async with AgentFlowClient(api_url, nats_url, key, f"bench-{name}", kind="agent") as af:
            await af.round_trips(3)
            samples = await af.round_trips(runs)
        row: dict[str, float] = {}
        for q in (50, 99):
            whole = percentile(samples, q) * 1000
            row[f"run_p{q}_ms"] = whole
            row[f"turn_p{q}_ms"] = whole / turns
        figures[name] = row
    return figures


def render(rows: dict[str, dict[str, float]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "agents, mock model at zero latency, noop tool (ms; one run at a time; per turn = the run over its turns)",
        f"{'agent':<38}{'run p50':>10}{'run p99':>10}{'turn p50':>10}{'turn p99':>10}",
    ]
    labels = {"plain": "1 turn, no tools", "two-tools": "2 turns, 2 parallel tool calls", "ten-turns": "10 turns"}
    for name, label in labels.items():
        row = rows.get(name)
        if row:
            lines.append(
                f"{label:<38}{row['run_p50_ms']:>10.2f}{row['run_p99_ms']:>10.2f}"
                f"{row['turn_p50_ms']:>10.2f}{row['turn_p99_ms']:>10.2f}"
            )
    return lines
