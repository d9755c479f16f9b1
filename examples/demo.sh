#!/usr/bin/env bash
# The demo behind `make demo`: start the embedded stack, register the example tools and workflow,
# run the workflow while following its events, show the run, and stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."

af up --workers 2 --detach
trap 'echo; echo "== af down"; af down' EXIT

echo; echo "== registering the example tools and workflow"
for tool in examples/tools/*.yaml; do af tool register "$tool"; done
af workflow apply examples/workflows/doc-review.yaml

echo; echo "== af workers ls"
af workers ls

echo; echo "== af run doc-review --input @examples/input.json --follow"
af run doc-review --input @examples/input.json --follow

echo; echo "== af runs ls"
af runs ls --limit 5
