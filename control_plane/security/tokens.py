"""Access tokens (EdDSA JWTs) and refresh tokens (opaque, used once, in families).

Signing keys live in the registry: the newest signs, every unexpired one verifies, so adding a key (by
rotation or by another control plane) needs no downtime. An access token names its refresh family (``fam``)
so that revoking the family also ends its access tokens.
"""

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from control_plane.errors import Unauthenticated
from control_plane.security.identity import Identity
from registry import tokens as store
from registry.db import Pool

ALGORITHM = "EdDSA"
REFRESH_PREFIX = "afr_"
_RELOAD_SECONDS = 5.0
_FAMILY_CHECK_SECONDS = 5.0


def unauthorized(detail: str) -> Unauthenticated:
    return Unauthenticated("unauthorized", detail, "Authorization")


class RefreshRejected(Unauthenticated):
    """A 401 for a refresh token, naming its family when it has one (for the audit trail)."""

    def __init__(self, detail: str, family: store.Family | None) -> None:
        super().__init__("unauthorized", detail, "refresh_token")
        self.family = family


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def body(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    private: Ed25519PrivateKey
    public: Ed25519PublicKey
    raw_public: bytes
    created_at: datetime
    expires_at: datetime


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.encode()).hexdigest()


class TokenIssuer:
    def __init__(self, pool: Pool, access_seconds: int, refresh_seconds: int, key_rotation_hours: int) -> None:
        self._pool = pool
        self._access_seconds = access_seconds
        self._refresh_lifetime = timedelta(seconds=refresh_seconds)
        self._rotation = timedelta(hours=key_rotation_hours)
        self._keys: dict[str, _Key] = {}
        self._signer: _Key | None = None
        self._loaded_at = 0.0
        # family id -> (revoked, checked at): revocations seen here count at once, others within seconds.
        self._families: dict[uuid.UUID, tuple[bool, float]] = {}
        # token -> (identity, family, exp): a signature is checked once (~165 us), not on every request.
        self._verified: dict[str, tuple[Identity, uuid.UUID, float]] = {}

    async def start(self) -> None:
        """Load the signing keys, adding one when the newest is due for rotation."""
        await self._reload()
        await self._signing_key()

    def _due(self, key: _Key | None) -> bool:
        """Whether ``key`` must sign no more: a rotation period old, or expiring before a token it signs."""
        now = datetime.now(UTC)
        return (
            key is None
            or now - key.created_at >= self._rotation
            or key.expires_at <= now + timedelta(seconds=self._access_seconds)
        )

    async def _signing_key(self) -> _Key:
        """The newest key, rotated once due (by another control plane, or here)."""
        if self._due(self._signer):
            await self._reload()
            if self._due(self._signer):
                await self.rotate()
        assert self._signer is not None, "rotate() stores a signing key"
        return self._signer

    async def rotate(self) -> str:
        """Add a new signing key (it signs from now on; the older ones keep verifying); returns its kid."""
        private = Ed25519PrivateKey.generate()
        kid = secrets.token_hex(8)
        await store.add_signing_key(
            self._pool,
            kid,
            private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()),
            private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            # A key verifies for one more rotation period after the next key replaces it as signer.
            2 * self._rotation + timedelta(seconds=self._access_seconds),
        )
        await self._reload()
        return kid

    async def _reload(self) -> None:
        rows = await store.live_signing_keys(self._pool)
        keys = {}
        for row in rows:
            private = Ed25519PrivateKey.from_private_bytes(row.private_key)
            keys[row.kid] = _Key(row.kid, private, private.public_key(), row.public_key, row.created_at, row.expires_at)
        self._keys = keys
        self._signer = keys[rows[0].kid] if rows else None
        self._loaded_at = time.monotonic()

    async def jwks(self) -> dict[str, Any]:
        """The public keys as a JWK set, read again when a few seconds old (other control planes add keys)."""
        if time.monotonic() - self._loaded_at > _RELOAD_SECONDS:
            await self._reload()
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(k.raw_public),
                    "kid": k.kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                }
                for k in self._keys.values()
            ]
        }

    async def _access_token(self, identity: Identity, family: uuid.UUID) -> str:
        signer = await self._signing_key()
        now = int(time.time())
        claims = {
            "sub": identity.key_prefix,
            "tenant": identity.tenant,
            "role": identity.role,
            "fam": str(family),
            "iat": now,
            "exp": now + self._access_seconds,
            "jti": secrets.token_hex(12),
        }
        return jwt.encode(claims, signer.private, algorithm=ALGORITHM, headers={"kid": signer.kid})

    async def issue(self, identity: Identity) -> TokenPair:
        """A new token pair (and refresh family) for an identity proven by its API key."""
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        family = await store.start_family(
            self._pool, identity.tenant, identity.key_prefix, _digest(refresh), self._refresh_lifetime
        )
        return TokenPair(await self._access_token(identity, family.id), refresh, self._access_seconds)

    async def refresh(
        self, refresh_token: str, identify_key: Callable[[str], Awaitable[Identity | None]]
    ) -> tuple[TokenPair, Identity]:
        """Rotate ``refresh_token``; ``identify_key(prefix)`` gives the key's identity as it is now."""
        successor = REFRESH_PREFIX + secrets.token_urlsafe(32)
        outcome, family = await store.rotate(
            self._pool, _digest(refresh_token), _digest(successor), self._refresh_lifetime
        )
        if outcome is store.Refresh.REUSED and family is not None:
            self.revoked([family.id])
        if outcome is not store.Refresh.ROTATED or family is None:
            detail = {
                store.Refresh.UNKNOWN: "the refresh token is not valid",
                store.Refresh.EXPIRED: "the refresh token has expired; log in again",
                store.Refresh.REVOKED: "the refresh token was revoked; log in again",
                store.Refresh.REUSED: "the refresh token was already used: every token of its login is revoked",
            }[outcome]
            raise RefreshRejected(detail, family)
        identity = await identify_key(family.key_prefix)
        if identity is None:
            raise RefreshRejected("the API key of this login no longer exists", family)
        return TokenPair(await self._access_token(identity, family.id), successor, self._access_seconds), identity

    async def revoke(self, refresh_token: str) -> tuple[store.Family | None, bool]:
        """End the login of ``refresh_token`` (used or not): its family and every token of it, here at once and
        on other control planes within seconds. The family (None: no such token) and whether it was live."""
        family, revoked = await store.revoke(self._pool, _digest(refresh_token))
        if family is not None:
            self.revoked([family.id])
        return family, revoked

    def revoked(self, families: list[uuid.UUID]) -> None:
        """Take note of logins revoked in the store by this control plane: their tokens fail here at once."""
        now = time.monotonic()
        for family in families:
            self._families[family] = (True, now)

    async def verify(self, token: str) -> Identity:
        """The identity an access token carries; 401 for anything but a valid, live EdDSA token of ours."""
        known = self._verified.get(token)
        if known is None or known[2] <= time.time():
            known = await self._check(token)
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[token] = known
        identity, family, _ = known
        if await self._revoked(family):
            raise unauthorized("the login of this access token was revoked")
        return identity

    async def _check(self, token: str) -> tuple[Identity, uuid.UUID, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise unauthorized("the access token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise unauthorized(f"access tokens are signed with {ALGORITHM}, not {header.get('alg')!r}")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise unauthorized("the access token names no signing key (kid)")
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._loaded_at > _RELOAD_SECONDS:
            await self._reload()  # another control plane may have added it
            key = self._keys.get(kid)
        if key is None:
            raise unauthorized("the access token was signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.public,
                algorithms=[ALGORITHM],
                options={"require": ["sub", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the access token has expired; refresh it") from None
        except jwt.InvalidTokenError as error:
            raise unauthorized(f"the access token is not valid: {error}") from None
        try:
            identity = Identity(str(claims["tenant"]), str(claims["role"]), str(claims["sub"]))
            return identity, uuid.UUID(str(claims["fam"])), float(claims["exp"])
        except (KeyError, ValueError):
            raise unauthorized("the access token lacks its claims") from None

    async def _revoked(self, family: uuid.UUID) -> bool:
        known = self._families.get(family)
        if known is not None and (known[0] or time.monotonic() - known[1] < _FAMILY_CHECK_SECONDS):
            return known[0]
        revoked = await store.family_revoked(self._pool, family)
        if len(self._families) > 100_000:
            self._families.clear()
        self._families[family] = (revoked, time.monotonic())
        return revoked
