"""Which deployments a tenant may call, and the chain a caller's ``model`` names.

A tenant sees its own deployments and the platform's (scope ``*``); its own hides a platform one of the
same name. A tier (``tier1``..``tier4``) names the chain of the tenant's visible deployments of that tier,
by ``order`` then name; any other ``model`` names one deployment, a chain of one. Nobody sees another
tenant's deployments: to a tenant they do not exist.

With ``AF_NO_LLM=1`` every tier and name leads to the built-in ``mock`` deployment, except the name of a
deployment that is itself a mock (its script still answers).

With ``AF_LOCAL_MODEL_URL`` set, the control plane registers the platform's ``local`` deployment
(``LOCAL``: provider ``local``, no tier) at its start, unless the platform has one already: an admin's change
to it stands.

Deployments are read from the registry at most every ``TTL_SECONDS`` per tenant (another control plane's
change shows within that time; this one's at once).
"""

import hashlib
import time
from dataclasses import dataclass

import msgspec

from bus.model_health import deployment_key
from control_plane.errors import Invalid, NotFound
from control_plane.gateway.documents import PLATFORM, TIERS, Mode, ModelSpec, check_model
from registry import models as store
from registry.db import Pool

TTL_SECONDS = 2.0
BUILTIN_MOCK = ModelSpec(name="mock", provider="mock", context_window=1_000_000)
LOCAL = {"name": "local", "provider": "local"}
"""The platform's deployment of the model server at ``AF_LOCAL_MODEL_URL``."""


@dataclass(frozen=True, slots=True)
class Deployment:
    scope: str
    """The tenant whose deployment it is, or ``*`` (the platform's)."""
    spec: ModelSpec
    key: str
    """Its key in the shared health bucket."""

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def of(cls, scope: str, spec: ModelSpec) -> "Deployment":
        return cls(scope, spec, deployment_key(scope, spec.name))


@dataclass(frozen=True, slots=True)
class Chain:
    """What a caller's ``model`` resolved to: the tier named (None for a model name) and its deployments."""

    tier: str | None
    deployments: tuple[Deployment, ...]


_MOCK = Deployment.of(PLATFORM, BUILTIN_MOCK)


def digest(spec: ModelSpec) -> str:
    return hashlib.sha256(msgspec.json.encode(spec, order="sorted")).hexdigest()


class Deployments:
    def __init__(self, pool: Pool, *, no_llm: bool) -> None:
        self._pool = pool
        self._no_llm = no_llm
        self._cache: dict[str, tuple[dict[str, Deployment], float]] = {}

    def reconfigure(self, *, no_llm: bool) -> None:
        """``AF_NO_LLM`` reloaded: chains resolved from now on follow it."""
        self._no_llm = no_llm

    async def visible(self, tenant: str) -> dict[str, Deployment]:
        """The tenant's deployments by name: its own, and the platform's it does not hide."""
        cached = self._cache.get(tenant)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        found: dict[str, Deployment] = {}
        for stored in await store.visible(self._pool, tenant):
            if stored.name not in found:  # the tenant's own come first
                found[stored.name] = Deployment.of(stored.scope, msgspec.json.decode(stored.spec, type=ModelSpec))
        self._cache[tenant] = (found, time.monotonic() + TTL_SECONDS)
        return found

    async def chain(self, tenant: str, model: str, mode: Mode) -> Chain:
        """The deployments ``model`` (a tier or a name) leads to, in failover order."""
        visible = await self.visible(tenant)
        if model in TIERS:
            if self._no_llm:
                return Chain(model, (_MOCK,))
            deployments = sorted(
                (d for d in visible.values() if d.spec.tier == model and d.spec.mode == mode),
                key=lambda d: (d.spec.order, d.name),
            )
            if not deployments:
                raise NotFound("model-not-found", f"no {mode} deployment serves {model}", "model")
            return Chain(model, tuple(deployments))
        deployment = visible.get(model)
        if self._no_llm and (deployment is None or deployment.spec.provider != "mock"):
            return Chain(None, (_MOCK,))
        if deployment is None:
            raise NotFound("model-not-found", f"no model or tier {model!r}", "model")
        if deployment.spec.mode != mode:
            detail = f"{model} is a{'n' if deployment.spec.mode == 'embedding' else ''} {deployment.spec.mode} model"
            raise Invalid("validation-error", detail, "model")
        return Chain(deployment.spec.tier, (deployment,))

    async def apply(self, scope: str, document: object) -> tuple[Deployment, store.StoredModel, str]:
        """Check and store a deployment document in ``scope``; answers ``created``, ``updated`` or ``unchanged``."""
        spec = check_model(document)
        stored, outcome = await store.put(
            self._pool, scope, spec.name, msgspec.json.encode(spec).decode(), digest(spec)
        )
        self._forget(scope)
        return Deployment.of(scope, spec), stored, outcome

    async def register(self, scope: str, document: object) -> bool:
        """Apply a deployment document in ``scope`` unless a deployment of its name is there; True if it did."""
        name = check_model(document).name
        existing = (await self.visible(scope)).get(name)
        if existing is not None and existing.scope == scope:
            return False
        await self.apply(scope, document)
        return True

    async def delete(self, scope: str, name: str) -> None:
        if not await store.delete(self._pool, scope, name):
            where = "the platform" if scope == PLATFORM else f"tenant {scope}"
            raise NotFound("model-not-found", f"{where} has no model deployment {name}", "name")
        self._forget(scope)

    def _forget(self, scope: str) -> None:
        if scope == PLATFORM:
            self._cache.clear()
        else:
            self._cache.pop(scope, None)
