"""The scope a request acts in: the caller's tenant (the default), or the platform (``?scope=platform``:
what every tenant shares, such as platform-wide model deployments and their secrets; platform admins)."""

from typing import Annotated, Literal

from litestar.params import Parameter

from control_plane.gateway.documents import PLATFORM
from control_plane.security.identity import Identity
from control_plane.services import Services

Scope = Literal["tenant", "platform"]
ScopeQuery = Annotated[Scope, Parameter(query="scope", required=False)]
"""Litestar reserves the name ``scope`` (the ASGI scope): the query parameter is read under another name."""


async def acting_in(services: Services, identity: Identity, scope: Scope, permission: tuple[str, str]) -> str:
    """The caller's tenant, or ``*`` for the platform once the caller may act there."""
    if scope == "tenant":
        return identity.tenant
    await services.authorizer.require(identity, PLATFORM, *permission)
    return PLATFORM


def shown_scope(scope: str) -> str:
    return "platform" if scope == PLATFORM else "tenant"
