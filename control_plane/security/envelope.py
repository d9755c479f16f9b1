"""Envelope encryption of secrets with AES-256-GCM (the ``cryptography`` package).

Each secret gets a random 256-bit data key; the value is sealed under it, and the data key is wrapped (sealed)
under the master key. Both blobs are ``nonce (12 random bytes) || ciphertext || tag``, and both bind the
secret's scope (its tenant, or ``*``) and name as associated data, each with its own label: a value or a
wrapped key copied into another row, or one in the place of the other, does not open. Rotating the master
key re-wraps the data keys only; the values' ciphertexts stay as they are.

A master key is named by its ``id``, a keyed hash (HMAC-SHA-256 under the key itself, 16 hex digits): it
tells two keys apart and says nothing of either. A key's ``repr`` is its id.
"""

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12
_VALUE_LABEL = b"agentflow/secret-value\x00"
_DATA_KEY_LABEL = b"agentflow/secret-data-key\x00"


class EnvelopeError(ValueError):
    """A master key that is not 32 bytes of base64, or a sealed blob that does not open under it."""


@dataclass(frozen=True, slots=True)
class Sealed:
    ciphertext: bytes
    """The value under its data key."""
    wrapped_key: bytes
    """The data key under the master key."""
    master_id: str


def _bound(label: bytes, scope: str, name: str) -> bytes:
    # Names cannot hold NUL (they are checked at the edge), so the three parts cannot run into each other.
    return label + scope.encode() + b"\x00" + name.encode()


def _seal(key: bytes, plain: bytes, associated: bytes) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plain, associated)


def _open(key: bytes, blob: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated)
    except (InvalidTag, ValueError):
        raise EnvelopeError("a sealed secret does not open: another master key, or another row's") from None


class MasterKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise EnvelopeError(f"a master key is {KEY_BYTES} bytes, not {len(key)}")
        self._key = key
        self.id = hmac.new(key, b"agentflow master key id", hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id})"

    @classmethod
    def generate(cls) -> "MasterKey":
        return cls(AESGCM.generate_key(bit_length=256))

    @classmethod
    def from_text(cls, text: str) -> "MasterKey":
        """A key from its base64 text (standard or URL-safe alphabet, padded or not)."""
        cleaned = text.strip().replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError("a master key is base64 text") from None
        return cls(raw)

    def text(self) -> str:
        """The key as base64, for its key file."""
        return base64.b64encode(self._key).decode()

    def seal(self, scope: str, name: str, value: str) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=256)
        return Sealed(
            ciphertext=_seal(data_key, value.encode(), _bound(_VALUE_LABEL, scope, name)),
            wrapped_key=_seal(self._key, data_key, _bound(_DATA_KEY_LABEL, scope, name)),
            master_id=self.id,
        )

    def open(self, scope: str, name: str, ciphertext: bytes, wrapped_key: bytes) -> str:
        data_key = _open(self._key, wrapped_key, _bound(_DATA_KEY_LABEL, scope, name))
        return _open(data_key, ciphertext, _bound(_VALUE_LABEL, scope, name)).decode()

    def rewrap(self, successor: "MasterKey", scope: str, name: str, wrapped_key: bytes) -> bytes:
        """The data key of ``wrapped_key`` wrapped by ``successor`` instead (with a new nonce)."""
        bound = _bound(_DATA_KEY_LABEL, scope, name)
        return _seal(successor._key, _open(self._key, wrapped_key, bound), bound)
