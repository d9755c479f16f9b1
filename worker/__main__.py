"""``python -m worker start --queue Q --concurrency N``: run one worker process."""

import argparse
import asyncio
import sys

import uvloop

from bus import NotAuthorized, logs, tracing
from bus.commands import CommandParser
from bus.config import config_file
from bus.metrics import serve
from bus.reload import Reloads
from sandbox import BACKENDS, SandboxError, open_backend
from worker.service import Worker
from worker.settings import Settings, SettingsError, load


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(
        prog="af worker start",
        description="Start a worker process: it pulls its tenant's tasks from one queue and runs each tool in a "
        "sandbox. Flags override the AF_* environment named in each one's help.",
    )
    parser.add_argument("command", nargs="?", choices=["start"], default="start", help=argparse.SUPPRESS)
    parser.add_argument("--queue", metavar="QUEUE", help="The queue to pull (AF_QUEUE, default 'default').")
    parser.add_argument(
        "--tenant", metavar="TENANT", help="The tenant whose tasks to run (AF_TENANT, default 'default')."
    )
    parser.add_argument("--concurrency", metavar="N", type=int, help="Tasks at once (AF_CONCURRENCY, default 8).")
    parser.add_argument(
        "--sandbox",
        choices=BACKENDS,
        help="The sandbox backend (AF_SANDBOX; default: runsc where installed, else process).",
    )
    parser.add_argument("--nats-url", dest="nats_url", metavar="URL", help="The NATS server (AF_NATS_URL).")
    parser.add_argument("--worker-id", dest="worker_id", metavar="ID", help="AF_WORKER_ID (default <host>-<pid>).")
    parser.add_argument(
        "--metrics-port",
        dest="metrics_port",
        metavar="PORT",
        type=int,
        help="Prometheus metrics on 127.0.0.1 (AF_METRICS_PORT, default 0: a free port).",
    )
    args = parser.parse_args(argv)
    try:
        flags = {k: v for k, v in vars(args).items() if k != "command"}
        settings = load(flags)
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
    worker = Worker(settings, backend, metrics_port)
    reloads = Reloads(
        settings,
        lambda: load(flags),
        worker.reconfigure,
        config_file=config_file(),
        watch_seconds=settings.config_watch_seconds,
    )
    try:
        uvloop.run(_run(worker, reloads))
    except NotAuthorized as error:
        print(f"af worker: {error}", file=sys.stderr)
        raise SystemExit(2) from None


async def _run(worker: Worker, reloads: Reloads[Settings]) -> None:
    """The worker, taking on reloaded settings while it runs."""
    following = asyncio.create_task(reloads.follow(), name="reloads")
    try:
        await worker.run()
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)


if __name__ == "__main__":
    main()
