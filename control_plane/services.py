"""The control plane's long-lived parts, wired together: connections, caches and background loops."""

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from bus import Bus, Fleet, connect, model_turns
from bus.streams import ensure_results_consumer, ensure_streams, keep_last_blocks
from control_plane.catalog.resolver import Catalog
from control_plane.engine.admission import Admission
from control_plane.engine.dispatch import Dispatcher
from control_plane.engine.fleet_view import FleetView
from control_plane.engine.leadership import Leadership
from control_plane.engine.orchestrator import Orchestrator
from control_plane.engine.run_cache import RunCache
from control_plane.engine.submit import Submitter
from control_plane.gateway import Gateway
from control_plane.gateway.turns import TurnAnswerer
from control_plane.gauges import sample
from control_plane.security.authentication import Authenticator
from control_plane.security.quotas import FailureBrake, TenantQuotas
from control_plane.security.rbac import Authorizer
from control_plane.security.secrets import SecretStore
from control_plane.security.tokens import TokenIssuer
from control_plane.settings import Settings
from registry import connect as connect_db
from registry import limits, migrate
from registry.db import Pool, ping
from registry.installation import installation_id

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    pool: Pool
    bus: Bus
    fleet: Fleet
    fleet_view: FleetView
    auth: Authenticator
    catalog: Catalog
    dispatcher: Dispatcher
    submitter: Submitter
    orchestrator: Orchestrator
    authorizer: Authorizer
    quotas: TenantQuotas
    brake: FailureBrake
    secrets: SecretStore
    gateway: Gateway
    stack_id: str
    """The installation's id (``registry.installation``): what a client ties its stored login to."""
    leadership: Leadership
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    loops: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> "Services":
        pool = await connect_db(settings.database_url, min_size=4, max_size=16)
        applied = await migrate(pool)
        if applied:
            log.info("database schema: applied %s", ", ".join(applied))
        bus = await connect(settings.nats_url, "agentflow-control-plane", settings.nats_user, settings.nats_password)
        await ensure_streams(bus, settings.nats_replicas)
        await ensure_results_consumer(bus)
        issuer = TokenIssuer(
            pool, settings.access_token_seconds, settings.refresh_token_seconds, settings.signing_key_rotation_hours
        )
        await issuer.start()
        auth = Authenticator(pool, issuer)
        if settings.bootstrap_key_file:
            await auth.install_key((await asyncio.to_thread(Path(settings.bootstrap_key_file).read_text)).strip())
        authorizer = Authorizer(pool)
        await authorizer.load()
        catalog = Catalog(pool)
        secrets = await open_secrets(pool, settings)
        admission = Admission(settings.max_in_flight_per_tenant)
        admission.configure(await limits.all_limits(pool))
        dispatcher = Dispatcher(pool, bus, catalog, admission)
        cache = RunCache()
        submitter = Submitter(pool, catalog, dispatcher, cache)
        orchestrator = Orchestrator(pool, bus, catalog, dispatcher, cache)
        fleet = await Fleet.open(bus)
        leadership = Leadership(settings.database_url)
        fleet_view = FleetView(pool, bus, fleet, orchestrator)
        await fleet_view.load()
        services = cls(
            settings,
            pool,
            bus,
            fleet,
            fleet_view,
            auth,
            catalog,
            dispatcher,
            submitter,
            orchestrator,
            authorizer,
            TenantQuotas(pool, settings.requests_per_second, settings.max_concurrent_runs, leadership.control_planes),
            FailureBrake(settings.auth_failures_per_minute),
            secrets,
            await Gateway.open(pool, bus, settings.gateway, secrets),
            await installation_id(pool),
            leadership,
        )
        # Agents' model turns, asked by workers over the bus, answered by the gateway.
        turns = TurnAnswerer(services.gateway)
        await model_turns.serve(bus, turns.answer)
        await model_turns.serve_cancels(bus, turns.cancelled)
        leads = services.leadership.leads
        await services.leadership.check()
        services.loops = [
            asyncio.create_task(services.leadership.run(services.stop), name="leadership"),
            asyncio.create_task(submitter.run(services.stop), name="submitter"),
            asyncio.create_task(orchestrator.run(services.stop), name="orchestrator"),
            asyncio.create_task(dispatcher.relay(services.stop, leads), name="outbox-relay"),
            asyncio.create_task(dispatcher.mark_published(services.stop), name="outbox-marker"),
            asyncio.create_task(keep_last_blocks(bus, services.stop), name="stream-keeper"),
            asyncio.create_task(dispatcher.release(services.stop), name="release-held"),
            asyncio.create_task(orchestrator.watch_due(services.stop, leads), name="due"),
            asyncio.create_task(fleet_view.run(services.stop, leads), name="fleet"),
            asyncio.create_task(sample(bus, services.fleet, services.stop, leads), name="sampler"),
            asyncio.create_task(services.gateway.run(services.stop), name="gateway"),
        ]
        return services

    async def close(self) -> None:
        self.stop.set()
        self.submitter.wake()
        self.dispatcher.wake()
        await asyncio.gather(*self.loops, return_exceptions=True)
        await self.submitter.close()
        await self.dispatcher.close()
        await self.gateway.close()
        await self.bus.close()
        await self.pool.close()

    async def reconfigure(self, settings: Settings) -> None:
        """Hand reloaded settings (``bus.reload``: SIGHUP, or the config file changed) to the parts that use
        them; ``settings`` keeps those that need a restart as they were."""
        await self.gateway.reconfigure(settings.gateway)  # first: the one part that may fail
        self.dispatcher.admission.set_ceiling(settings.max_in_flight_per_tenant)
        self.quotas.set_defaults(settings.requests_per_second, settings.max_concurrent_runs)
        self.brake.set_per_minute(settings.auth_failures_per_minute)
        self.settings = settings  # what routes read per request (the event stream's keep-alive)
        self.dispatcher.wake()  # a higher ceiling releases held tasks now, not at the next round

    async def checks(self) -> dict[str, str]:
        checks = {"nats": "ok" if self.bus.is_connected else "disconnected"}
        try:
            await asyncio.wait_for(ping(self.pool), 2.0)
            checks["postgres"] = "ok"
        except Exception as error:
            checks["postgres"] = f"unreachable: {type(error).__name__}"
        return checks


async def open_secrets(pool: Pool, settings: Settings) -> SecretStore:
    return await SecretStore.open(pool, master_key_text=settings.master_key, master_key_file=settings.master_key_file)


async def preflight(settings: Settings) -> None:
    """What can stop a control plane from starting, checked before it serves: the schema is applied and its
    master key is the one the database's secrets are wrapped by (SettingsError, one line, if not)."""
    pool = await connect_db(settings.database_url, min_size=1, max_size=2)
    try:
        if applied := await migrate(pool):
            log.info("database schema: applied %s", ", ".join(applied))
        await open_secrets(pool, settings)
    finally:
        await pool.close()
