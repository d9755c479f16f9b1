"""Prints an agent run's conversation from its record: `af runs get RUN --output json | python3 transcript.py`.

Each model turn shows the tool calls the model asked for or its answer, with the turn's tokens; each tool
call shows the result the model got back. Long texts are cut at WIDTH characters.
"""

import json
import re
import sys

WIDTH = 160
CALL = re.compile(r"/turn-\d+/call-\d+$|^turn-\d+/call-\d+$")


def short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = " ".join(text.split())
    return text if len(text) <= WIDTH else text[: WIDTH - 1] + "…"


def turn(task: dict[str, object]) -> str:
    output = task.get("output") if isinstance(task.get("output"), dict) else {}
    assert isinstance(output, dict)
    message, usage = output.get("message") or {}, output.get("usage") or {}
    tokens = f"({usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out, {output.get('model')})"
    calls = message.get("tool_calls") or []
    if calls:
        asked = ", ".join(f"{c['function']['name']}({short(c['function']['arguments'])})" for c in calls)
        return f"model asks for {asked} {tokens}"
    return f"model answers: {short(message.get('content') or '')} {tokens}"


def main() -> int:
    run = json.load(sys.stdin)
    for task in run.get("tasks") or []:
        step = str(task.get("step"))
        if task.get("state") != "succeeded":
            print(f"{step:<28} {task.get('state')}: {short(task.get('error') or '')}")
        elif str(task.get("tool", "")).startswith("@model"):
            print(f"{step:<28} {turn(task)}")
        elif CALL.search(step):
            print(f"{step:<28} {task.get('tool')} returns {short(task.get('output'))}")
    usage = run.get("usage") or {}
    print(f"tokens: {usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
