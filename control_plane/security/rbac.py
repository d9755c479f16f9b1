"""Authorization: pycasbin's RBAC with domains (a domain is a tenant), its policy lines in the registry.

A key's subject is ``key:<prefix>``; ``g`` lines grant a role to a key in a tenant (``*`` for platform
admins, whose role holds in every tenant) and ``p`` lines give a role an action on an object in a tenant.
"""

import logging
import time
from typing import Any

import casbin
from casbin.persist.adapters.asyncio import AsyncAdapter

from control_plane.errors import Forbidden
from control_plane.security.identity import Identity
from registry import keys, policy
from registry.db import Pool

MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (g(r.sub, p.sub, r.dom) || g(r.sub, p.sub, "*")) && (p.dom == "*" || p.dom == r.dom) \
&& (p.obj == "*" || p.obj == r.obj) && (p.act == "*" || p.act == r.act)
"""
# casbin logs its model and every policy load at INFO.
logging.getLogger("casbin").setLevel(logging.WARNING)

# A key made by another control plane is unknown here until the policy is read again: a refusal reads it
# again, at most this often.
_RELOAD_SECONDS = 2.0
_MAX_DECISIONS = 100_000


class RegistryAdapter(AsyncAdapter):  # type: ignore[misc]
    """Reads the policy through the registry; lines are written there (with the keys they grant), never here."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def load_policy(self, model: Any) -> None:
        for line in await policy.rules(self._pool):
            ptype = line[0]
            section = ptype[0]
            if section in model.model and ptype in model.model[section]:
                model.model[section][ptype].policy.append(line[1:])

    # The enforcer here only reads: grants are stored by the registry together with the keys they are for.
    async def save_policy(self, model: Any) -> None:
        raise NotImplementedError("policy lines are written through the registry")

    async def add_policy(self, sec: str, ptype: str, rule: list[str]) -> None:
        raise NotImplementedError("policy lines are written through the registry")

    async def remove_policy(self, sec: str, ptype: str, rule: list[str]) -> None:
        raise NotImplementedError("policy lines are written through the registry")

    async def remove_filtered_policy(self, sec: str, ptype: str, field_index: int, *field_values: str) -> None:
        raise NotImplementedError("policy lines are written through the registry")


class Authorizer:
    def __init__(self, pool: Pool) -> None:
        self._enforcer = casbin.AsyncEnforcer(casbin.AsyncEnforcer.new_model(text=MODEL), RegistryAdapter(pool))
        self._loaded_at = 0.0
        # casbin evaluates its matcher per policy line (hundreds of microseconds a request); a decision only
        # changes when the policy does, so each is remembered until the next load.
        self._decisions: dict[tuple[str, str, str, str], bool] = {}

    async def load(self) -> None:
        await self._enforcer.load_policy()
        self._decisions = {}
        self._loaded_at = time.monotonic()

    def _allowed(self, request: tuple[str, str, str, str]) -> bool:
        decision = self._decisions.get(request)
        if decision is None:
            decision = bool(self._enforcer.enforce(*request))
            if len(self._decisions) >= _MAX_DECISIONS:
                self._decisions.clear()
            self._decisions[request] = decision
        return decision

    def roles(self) -> list[str]:
        """Every role the policy gives permissions to."""
        return sorted({rule[0] for rule in self._enforcer.get_policy()})

    async def require(self, identity: Identity, tenant: str, obj: str, act: str) -> None:
        """403 unless ``identity`` may ``act`` on ``obj`` in ``tenant``."""
        request = (keys.subject(identity.key_prefix), tenant, obj, act)
        if self._allowed(request):
            return
        if time.monotonic() - self._loaded_at > _RELOAD_SECONDS:
            await self.load()
            if self._allowed(request):
                return
        raise Forbidden("forbidden", f"role {identity.role} lacks {obj}:{act} in tenant {tenant}")
