"""Where a deployment's ``credential`` (a secret's name) becomes the key sent to its provider.

The gateway asks a ``Credentials`` for it: the secrets store (``services.secrets``, whose ``reveal`` has this
signature) once it serves the control plane; until then ``CredentialsFile``, a JSON file named by
``AF_LLM_CREDENTIALS_FILE`` and read once at start. A revealed key is kept in memory for
``REVEAL_TTL_SECONDS``, so that a rotated key is picked up within that time without a reveal per call. Keys
never enter a record, a log line or an error.
"""

import json
import os
import stat
import time
from pathlib import Path
from typing import Protocol

from bus.config import SettingsError
from control_plane.errors import NotFound

REVEAL_TTL_SECONDS = 60.0


class Credentials(Protocol):
    async def reveal(self, tenant: str, name: str, *, purpose: str) -> str:
        """The value of ``tenant``'s secret ``name``; NotFound kind ``secret-not-found`` if there is none."""
        ...


def missing(tenant: str, name: str) -> NotFound:
    return NotFound("secret-not-found", f"tenant {tenant} has no secret {name}", "credential")


class CredentialsFile:
    """``{tenant: {name: value}}`` from a file only its owner may read (tenant ``*``: every tenant's)."""

    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self._secrets = secrets

    @classmethod
    def load(cls, path: str) -> "CredentialsFile":
        if not path:
            return cls({})
        try:
            mode = os.stat(path).st_mode
            document = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise SettingsError(f"AF_LLM_CREDENTIALS_FILE: cannot read {path}: {type(error).__name__}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SettingsError(f"AF_LLM_CREDENTIALS_FILE: {path} must be readable by its owner only (chmod 600)")
        if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
            raise SettingsError("AF_LLM_CREDENTIALS_FILE: expected {tenant: {secret name: value}}")
        return cls({str(t): {str(k): str(v) for k, v in names.items()} for t, names in document.items()})

    async def reveal(self, tenant: str, name: str, *, purpose: str) -> str:
        for scope in (tenant, "*"):
            if (value := self._secrets.get(scope, {}).get(name)) is not None:
                return value
        raise missing(tenant, name)


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
        value = await self._credentials.reveal(tenant, name, purpose=f"model deployment {deployment}")
        self._keys[(tenant, name)] = (value, now + REVEAL_TTL_SECONDS)
        return value
