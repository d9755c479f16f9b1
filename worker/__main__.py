"""``python -m worker start --queue Q --concurrency N``: run one worker process."""

import argparse
import sys

import uvloop

from bus import NotAuthorized, logs, tracing
from bus.metrics import serve
from sandbox import SandboxError, open_backend
from worker.service import Worker
from worker.settings import SettingsError, load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="af worker start", description="Run an AgentFlow worker.")
    parser.add_argument("command", nargs="?", choices=["start"], default="start")
    parser.add_argument("--queue", help="the queue to pull (AF_QUEUE, default 'default')")
    parser.add_argument("--tenant", help="the tenant whose tasks to run (AF_TENANT, default 'default')")
    parser.add_argument("--concurrency", type=int, help="tasks at once (AF_CONCURRENCY, default 8)")
    parser.add_argument("--sandbox", help="sandbox backend (AF_SANDBOX): runsc (default where installed) or process")
    parser.add_argument("--nats-url", dest="nats_url", help="AF_NATS_URL")
    parser.add_argument("--worker-id", dest="worker_id", help="AF_WORKER_ID (default <host>-<pid>)")
    parser.add_argument(
        "--metrics-port", dest="metrics_port", type=int, help="AF_METRICS_PORT (default 0: a free port)"
    )
    args = parser.parse_args(argv)
    try:
        settings = load({k: v for k, v in vars(args).items() if k != "command"})
        backend = open_backend(settings.sandbox)
    except (SettingsError, SandboxError) as error:
        print(f"af worker: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    logs.setup("worker", settings.log_level, settings.log_format, worker_id=settings.worker_id)
    tracing.setup(f"agentflow-worker-{settings.queue}", settings.otlp_endpoint)
    try:
        metrics_port = serve(settings.metrics_port)
    except OSError as error:
        print(
            f"af worker: AF_METRICS_PORT: cannot serve metrics on 127.0.0.1:{settings.metrics_port}: {error}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    try:
        uvloop.run(Worker(settings, backend, metrics_port).run())
    except NotAuthorized as error:
        print(f"af worker: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
