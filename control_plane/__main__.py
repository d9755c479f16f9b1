"""``python -m control_plane``: run the control plane (HTTP API, orchestrator, outbox relay)."""

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable

import uvicorn
from litestar import Litestar

from bus import logs, tracing
from bus.commands import CommandParser
from bus.config import config_file
from bus.reload import Reloads
from control_plane.api import Observed, create_app
from control_plane.services import Services, preflight
from control_plane.settings import Settings, SettingsError, load


def build(settings: Settings, load_again: Callable[[], Settings]) -> Litestar:
    """The app; ``load_again`` loads the settings as they are now, for a reload (SIGHUP, or AF_CONFIG changed)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = app.state.services = await Services.start(settings)
        reloads = Reloads(
            settings,
            load_again,
            services.reconfigure,
            config_file=config_file(),
            watch_seconds=settings.config_watch_seconds,
        )
        following = asyncio.create_task(reloads.follow(), name="reloads")
        try:
            yield
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
            await services.close()

    return create_app(lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = CommandParser(
        prog="af control-plane start",
        description="Start a control plane: the HTTP API, the orchestrator and the outbox relay. Flags override "
        "the AF_* environment named in each one's help.",
    )
    parser.add_argument("command", nargs="?", choices=["start"], default="start", help=argparse.SUPPRESS)
    parser.add_argument("--host", metavar="HOST", help="The listen address (AF_HOST, default 127.0.0.1).")
    parser.add_argument("--port", metavar="PORT", type=int, help="The HTTP port (AF_PORT, default 8080).")
    parser.add_argument("--nats-url", dest="nats_url", metavar="URL", help="The NATS server (AF_NATS_URL).")
    parser.add_argument(
        "--database-url", dest="database_url", metavar="URL", help="The PostgreSQL database (AF_DATABASE_URL)."
    )
    args = parser.parse_args(argv)
    try:
        flags = {k: v for k, v in vars(args).items() if k != "command"}
        settings = load(flags)
        logs.setup("control-plane", settings.log_level, settings.log_format)
        asyncio.run(preflight(settings))
    except SettingsError as error:
        print(f"af control-plane: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    tracing.setup("agentflow-control-plane", settings.otlp_endpoint)
    uvicorn.run(
        Observed(build(settings, lambda: load(flags))),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools" if _has("httptools") else "h11",
        log_level="warning",
        log_config=None,  # uvicorn's records go through the process's own handler (JSON lines or text)
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main()
