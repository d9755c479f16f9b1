"""Where a deployment's ``credential`` (a secret's name) becomes the key sent to its provider.

The gateway asks a ``Credentials`` for it: the control plane's secrets store (``services.secrets``, whose
``reveal`` has this signature and audits each reveal with its purpose). A revealed key is kept in memory for
``REVEAL_TTL_SECONDS``, so that a key replaced through another control plane is picked up within that time
without a reveal per call (one replaced or deleted through this one is forgotten at once). Keys
never enter a record, a log line or an error.
"""

import time
from typing import Protocol

REVEAL_TTL_SECONDS = 60.0


class Credentials(Protocol):
    async def reveal(self, tenant: str, name: str, *, purpose: str) -> str:
        """The value of ``tenant``'s secret ``name``; NotFound kind ``secret-not-found`` if there is none."""
        ...


class KeyCache:
    """Revealed keys, each kept ``REVEAL_TTL_SECONDS``."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}

    async def key(self, tenant: str, name: str, deployment: str) -> str:
        cached = self._keys.get((tenant, name))
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        value = await self._credentials.reveal(tenant, name, purpose=f"model gateway: deployment {deployment}")
        self._keys[(tenant, name)] = (value, now + REVEAL_TTL_SECONDS)
        return value

    def forget(self, tenant: str, name: str) -> None:
        """Drop a kept key (its secret was replaced or deleted through this control plane)."""
        self._keys.pop((tenant, name), None)
