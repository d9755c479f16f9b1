"""Authentication: a Bearer access token (EdDSA JWT, see ``tokens``) or an API key ``af_<prefix>_<secret>``,
stored as a salted PBKDF2 hash found by its prefix.

Verifying a hash is deliberately slow, so a verified key is remembered (by a digest of the whole key)
for a short while: the hot path pays the hash once, not per request. A key revoked here is forgotten at
once, with its logins; one revoked through another control plane is noticed within ``_LIVE_CHECK_SECONDS``
(a remembered key's row is read again that often, without its hash).
"""

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from control_plane.errors import Conflict, Unauthenticated
from control_plane.security.identity import Identity
from control_plane.security.tokens import TokenIssuer, looks_like_jwt, unauthorized
from registry import keys, tenants
from registry.db import Pool

__all__ = ["DEFAULT_TENANT", "Authenticator", "Identity", "KeyCheck", "KeyRejected", "hash_secret", "new_key"]

_ITERATIONS = 200_000
_CACHE_SECONDS = 60.0
_LIVE_CHECK_SECONDS = 2.0
DEFAULT_TENANT = "default"
PLATFORM_ADMIN = keys.PLATFORM_ADMIN


def new_key() -> str:
    return f"af_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def sends_api_key(authorization: str | None) -> bool:
    """Whether an ``Authorization`` header presents an API key (rather than an access token)."""
    return authorization is not None and authorization.startswith("Bearer af_")


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


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """The outcome of checking an API key: its identity when valid, and whether the hash was computed now
    (rather than remembered), which is what the audit trail records as an authentication."""

    identity: Identity | None
    fresh: bool
    prefix: str | None = None
    tenant: str | None = None
    revoked: bool = False
    """The key exists but was revoked: refused without its secret checked, so it is no guess to brake."""

    @property
    def guessed(self) -> bool:
        """Whether this refusal may be a guess of a known key's secret (which the brake counts)."""
        return self.identity is None and self.tenant is not None and not self.revoked


class KeyRejected(Unauthenticated):
    """A 401 for an API key, naming the key's prefix and tenant when it exists (for the audit trail)."""

    def __init__(self, check: KeyCheck) -> None:
        super().__init__("unauthorized", "the API key is not valid", "Authorization")
        self.check = check
        self.prefix = check.prefix
        self.tenant = check.tenant


class Authenticator:
    def __init__(self, pool: Pool, issuer: TokenIssuer) -> None:
        self._pool = pool
        self.issuer = issuer
        # digest of the key -> (identity, verified until, row last read at)
        self._verified: dict[bytes, tuple[Identity, float, float]] = {}

    async def install_key(self, key: str, tenant: str = DEFAULT_TENANT, role: str = PLATFORM_ADMIN) -> None:
        """Store ``key`` (e.g. the embedded stack's local admin key) for ``tenant``; a platform admin's role
        holds in every tenant."""
        split = _split(key)
        if split is None:
            raise ValueError("an API key looks like af_<prefix>_<secret>")
        await tenants.ensure_tenant(self._pool, tenant)
        domain = keys.ALL_TENANTS if role == PLATFORM_ADMIN else tenant
        await keys.put_key(self._pool, keys.ApiKey(split[0], tenant, hash_secret(split[1]), role), domain)

    async def create_key(self, tenant: str, role: str) -> tuple[str, Identity]:
        """A new API key of ``tenant`` with ``role``; the key itself is known only to the caller from now on."""
        key = new_key()
        await self.install_key(key, tenant, role)
        prefix = key.split("_", 2)[1]
        return key, Identity(tenant, role, prefix)

    async def key_identity(self, prefix: str) -> Identity | None:
        """The identity of the live key with ``prefix``; None when it does not exist or was revoked."""
        stored = await keys.find_key(self._pool, prefix)
        return None if stored is None or stored.revoked else Identity(stored.tenant, stored.role, stored.prefix)

    async def revoke_key(self, prefix: str) -> keys.KeyInfo | None:
        """Revoke the live key with ``prefix`` and every login made with it; None when there is no such key.
        Refuses (409) to revoke the last live platform-admin key, which would lock every admin out."""
        try:
            revocation = await keys.revoke_key(self._pool, prefix)
        except keys.LastPlatformAdmin:
            raise Conflict(
                "last-platform-admin", f"key {prefix} is the last live platform-admin key; make another first", "id"
            ) from None
        if revocation is None:
            return None
        self._verified = {digest: entry for digest, entry in self._verified.items() if entry[0].key_prefix != prefix}
        self.issuer.revoked(revocation.families)
        return revocation.key

    async def _remembered(self, cache_key: bytes) -> Identity | None:
        cached = self._verified.get(cache_key)
        if cached is None:
            return None
        identity, until, read_at = cached
        now = time.monotonic()
        if until <= now:
            return None
        if now - read_at > _LIVE_CHECK_SECONDS:
            if not await keys.is_live(self._pool, identity.key_prefix):
                del self._verified[cache_key]
                return None
            self._verified[cache_key] = (identity, until, now)
        return identity

    async def check_key(self, key: str) -> KeyCheck:
        cache_key = hashlib.sha256(key.encode()).digest()
        remembered = await self._remembered(cache_key)
        if remembered is not None:
            return KeyCheck(remembered, fresh=False)
        split = _split(key)
        stored = None if split is None else await keys.find_key(self._pool, split[0])
        if split is None or stored is None:
            return KeyCheck(None, fresh=True, prefix=split[0] if split else None)
        if stored.revoked:
            return KeyCheck(None, fresh=True, prefix=stored.prefix, tenant=stored.tenant, revoked=True)
        # The hash takes a good part of a CPU for a while (that is its point): not on the event loop.
        if not await asyncio.to_thread(_verify, split[1], stored.hash):
            return KeyCheck(None, fresh=True, prefix=stored.prefix, tenant=stored.tenant)
        identity = Identity(stored.tenant, stored.role, stored.prefix)
        if len(self._verified) > 10_000:
            self._verified.clear()
        now = time.monotonic()
        self._verified[cache_key] = (identity, now + _CACHE_SECONDS, now)
        return KeyCheck(identity, fresh=True)

    async def identify(self, authorization: str | None) -> tuple[Identity, KeyCheck | None]:
        """The identity of a request's ``Authorization`` header, with the key check when it sent an API key."""
        if not authorization or not authorization.startswith("Bearer "):
            raise unauthorized("send an access token or an API key as 'Authorization: Bearer <token>'")
        token = authorization[len("Bearer ") :].strip()
        if token.startswith("af_"):
            check = await self.check_key(token)
            if check.identity is None:
                raise KeyRejected(check)
            return check.identity, check
        if looks_like_jwt(token):
            return await self.issuer.verify(token), None
        raise unauthorized("the bearer token is neither an access token nor an API key")
