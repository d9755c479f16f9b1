"""API keys: ``af_<prefix>_<secret>``, stored as a salted PBKDF2 hash found by its prefix.

Verifying a hash is deliberately slow, so a verified key is remembered (by a digest of the whole key)
for a short while: the hot path pays the hash once, not per request.
"""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from control_plane.problems import Problem
from registry import tenants
from registry.db import Pool

_ITERATIONS = 200_000
_CACHE_SECONDS = 60.0
DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    role: str
    key_prefix: str


def new_key() -> str:
    return f"af_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def _split(key: str) -> tuple[str, str] | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != "af" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, _ITERATIONS)
    return f"pbkdf2-sha256${_ITERATIONS}${salt.hex()}${digest.hex()}"


def _verify(secret: str, stored: str) -> bool:
    scheme, iterations, salt, digest = stored.split("$")
    if scheme != "pbkdf2-sha256":
        return False
    computed = hashlib.pbkdf2_hmac("sha256", secret.encode(), bytes.fromhex(salt), int(iterations))
    return hmac.compare_digest(computed.hex(), digest)


class Authenticator:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._verified: dict[bytes, tuple[Identity, float]] = {}

    async def install_key(self, key: str, tenant: str = DEFAULT_TENANT, role: str = "admin") -> None:
        """Store ``key`` (e.g. the embedded stack's local admin key) for ``tenant``."""
        split = _split(key)
        if split is None:
            raise ValueError("an API key looks like af_<prefix>_<secret>")
        await tenants.ensure_tenant(self._pool, tenant)
        await tenants.put_api_key(self._pool, tenants.ApiKey(split[0], tenant, hash_secret(split[1]), role))

    async def identify(self, authorization: str | None) -> Identity:
        if not authorization or not authorization.startswith("Bearer "):
            raise Problem(401, "unauthorized", "send an API key as 'Authorization: Bearer <key>'", "Authorization")
        key = authorization[len("Bearer ") :].strip()
        cache_key = hashlib.sha256(key.encode()).digest()
        cached = self._verified.get(cache_key)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        split = _split(key)
        stored = None if split is None else await tenants.find_api_key(self._pool, split[0])
        if split is None or stored is None or not _verify(split[1], stored.hash):
            raise Problem(401, "unauthorized", "the API key is not valid", "Authorization")
        identity = Identity(stored.tenant, stored.role, stored.prefix)
        self._verified[cache_key] = (identity, time.monotonic() + _CACHE_SECONDS)
        return identity
