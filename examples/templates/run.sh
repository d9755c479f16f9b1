#!/usr/bin/env bash
# Registers one template (the shared tools, its model deployments, agents and workflow) and runs its
# workflow on its input.json, printing the run: every step, each agent's turns and tool calls among them.
#
#   examples/templates/run.sh code_review           its agents answered by their mock scripts (models/)
#   examples/templates/run.sh code_review --local   each of its agents' deployments pointed at the local model
#                                                   (a stack started with `af up --local-model`)
#
# Run it again without --local to script the agents with the mock provider once more.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
template="${1:?usage: examples/templates/run.sh TEMPLATE [--local]}"
dir="$here/$template"
[ -f "$dir/workflow.yaml" ] || { echo "run.sh: no template $template in $here" >&2; exit 2; }

for tool in "$here"/tools/*.yaml "$here"/../tools/mock-editor.yaml; do af tool register "$tool" >/dev/null; done
for model in "$dir"/models/*.yaml; do
  [ -f "$model" ] || continue
  if [ "${2:-}" = "--local" ]; then
    name=$(sed -n 's/^name: *//p' "$model")
    # A small model on a busy CPU may take minutes for a turn: a long attempt timeout, not a failover.
    af model apply <(printf '{"name": "%s", "provider": "local", "timeout_seconds": 900}\n' "$name") >/dev/null
  else
    af model apply "$model" >/dev/null
  fi
done
for agent in "$dir"/agents/*.yaml; do [ -f "$agent" ] && af agent apply "$agent" >/dev/null; done
af workflow apply "$dir/workflow.yaml" >/dev/null
af run "$(sed -n 's/^name: *//p' "$dir/workflow.yaml")" --input "@$dir/input.json" --wait
