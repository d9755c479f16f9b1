#!/usr/bin/env bash
# The demo behind `make demo`: start the embedded stack, register the example tools and workflow,
# run the workflow while following its events, show the run, and stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."

af up --workers 2 --detach
trap 'echo; echo "== af down"; af down' EXIT

echo; echo "== registering the example tools and workflow templates"
for tool in examples/tools/*.yaml; do af tool register "$tool"; done
for workflow in examples/workflows/*.yaml; do af workflow apply "$workflow"; done

echo; echo "== af workers ls"
af workers ls

echo; echo "== af run doc-review --input @examples/input.json --follow"
af run doc-review --input @examples/input.json --follow

echo; echo "== af run approval: a state machine that waits for a person's signal"
run_id=$(af run approval --input '{"text": "AgentFlow now plans state machines and behavior trees."}' --output json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
echo "started run $run_id; sending: af signal $run_id approve --data '{\"by\": \"demo\"}'"
for _ in $(seq 60); do  # refused (409) until the run reaches its wait state
  af signal "$run_id" approve --data '{"by": "demo"}' 2>/dev/null && break
  sleep 0.5
done
af logs "$run_id" --follow
af runs get "$run_id"

echo; echo "== af runs ls"
af runs ls --limit 5
