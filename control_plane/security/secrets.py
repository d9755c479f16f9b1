"""The secrets store: every tenant's secrets (provider keys, later tool credentials), write-only to users.

A value comes in through ``put`` and goes out only through ``reveal``, which the control plane's own parts
call (the gateway, for a deployment's key) and which is audited with its purpose; nothing that lists or
changes secrets answers with one. Values are sealed (``envelope``) before they reach the registry, under
the master key ``master_key`` loads, and every control plane of a database must hold the key its secrets are
wrapped by: ``open`` refuses to start with another.

A secret belongs to a scope: a tenant, or ``*`` for the platform (the keys of platform-wide deployments).
Nothing falls back from one scope to another: a tenant's deployment can only be given its own tenant's
secrets, so that it cannot send the platform's key to an endpoint of its choosing.

When another control plane rotates the master key, this one notices on its next use (a row, or the database,
naming another key) and takes the new key from the shared key file.
"""

import asyncio
import functools
import re

from bus.config import SettingsError
from control_plane.errors import Conflict, Invalid, NotFound, Unavailable
from control_plane.security import master_key
from control_plane.security.envelope import EnvelopeError, MasterKey
from control_plane.security.master_key import KeySource
from registry import audit
from registry import secrets as stored
from registry.db import Pool
from registry.secrets import SealedRow, SecretInfo

__all__ = ["MAX_VALUE_BYTES", "SecretInfo", "SecretStore"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
"""What a deployment's ``credential`` may name (the gateway's documents check the same)."""
MAX_VALUE_BYTES = 64 * 1024
PLATFORM = "*"
"""The scope of the platform's secrets (as of platform-wide deployments)."""
ACTOR = "control-plane"
"""The audit trail's actor of a reveal: the control plane itself, on behalf of what ``purpose`` names."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        detail = f"invalid secret name {name!r}: lowercase letters, digits, '.', '_' and '-', at most 63"
        raise Invalid("invalid-name", detail, "name")
    return name


def _check_value(value: str) -> str:
    if not value:
        raise Invalid("validation-error", "a secret's value cannot be empty", "value")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise Invalid("validation-error", f"a secret's value is at most {MAX_VALUE_BYTES} bytes", "value")
    return value


def _owner(scope: str) -> str:
    return "the platform" if scope == PLATFORM else f"tenant {scope}"


def _not_found(scope: str, name: str) -> NotFound:
    return NotFound("secret-not-found", f"{_owner(scope)} has no secret {name}", "name")


def _rewrapped(old: MasterKey, new: MasterKey, row: SealedRow) -> bytes:
    """A row's data key wrapped by ``new``; a row that does not open stops the rotation (which changes
    nothing then): re-wrapped or not, it would stay unreadable, and the invariant that every row is wrapped
    by the key the database names would no longer hold."""
    try:
        return old.rewrap(new, row.scope, row.name, row.wrapped_key)
    except EnvelopeError:
        raise Conflict(
            "secret-unreadable",
            f"{_owner(row.scope)}'s secret {row.name} does not open under the master key (its row was altered or"
            " copied from another): set it again or delete it, then rotate",
            "new_key",
        ) from None


class SecretStore:
    def __init__(self, pool: Pool, source: KeySource, key: MasterKey) -> None:
        self._pool = pool
        self._source = source
        self._key = key
        self._rotating = asyncio.Lock()

    @classmethod
    async def open(cls, pool: Pool, *, master_key_text: str, master_key_file: str) -> "SecretStore":
        """The store of a control plane starting; SettingsError, one line, if its master key is not the one
        the database's secrets are wrapped by."""
        source = await asyncio.to_thread(master_key.load, master_key_text, master_key_file)
        wrapped_by = await stored.claim_master(pool, source.key.id)
        key = source.key
        if wrapped_by != key.id:
            if source.staged is None or source.staged.id != wrapped_by:
                raise SettingsError(
                    f"{source.origin}: master key {key.id} is not the one this database's secrets are wrapped by"
                    f" ({wrapped_by}); start with that key (AF_MASTER_KEY or AF_MASTER_KEY_FILE)"
                )
            # A rotation was committed and its control plane stopped before installing the key: finish it.
            assert source.file is not None
            await asyncio.to_thread(master_key.promote, source.file, source.staged)
            key = source.staged
        return cls(pool, source, key)

    @property
    def master_id(self) -> str:
        return self._key.id

    async def put(self, scope: str, name: str, value: str, *, actor: str) -> SecretInfo:
        """Set or replace ``scope``'s secret ``name``; its version goes up by one each time."""
        check_name(name)
        _check_value(value)
        for _ in range(2):
            key = self._key
            sealed = key.seal(scope, name, value)
            info = await stored.put(
                self._pool,
                scope=scope,
                name=name,
                ciphertext=sealed.ciphertext,
                wrapped_key=sealed.wrapped_key,
                master_id=sealed.master_id,
                actor=actor,
            )
            if info is not None:
                return info
            await self._follow_rotation(key)
        raise Unavailable("master-key-changed", "the master key is being rotated; try again", retry_after=1)

    async def names(self, scope: str) -> list[SecretInfo]:
        return await stored.list_names(self._pool, scope)

    async def delete(self, scope: str, name: str) -> None:
        check_name(name)
        if not await stored.delete(self._pool, scope, name):
            raise _not_found(scope, name)

    async def reveal(self, tenant: str, name: str, *, purpose: str) -> str:
        """The value of ``tenant``'s secret ``name``, for the control plane's own use (audited with
        ``purpose``); NotFound ``secret-not-found`` if there is none."""
        for _ in range(2):
            row = await stored.sealed(self._pool, tenant, name)
            if row is None:
                await self._audit(tenant, name, "not-found", purpose)
                raise _not_found(tenant, name)
            key = self._key  # the one the row names, even if a rotation of this process replaces it meanwhile
            if row.master_id == key.id:
                break
            await self._follow_rotation(key)  # then read the row again: it may have been re-wrapped
        else:
            raise Unavailable("master-key-changed", "the master key is being rotated; try again", retry_after=1)
        try:
            value = key.open(row.scope, row.name, row.ciphertext, row.wrapped_key)
        except EnvelopeError:
            await self._audit(tenant, name, "unreadable", purpose)
            raise Conflict(
                "secret-unreadable",
                f"{_owner(tenant)}'s secret {name} does not open under the master key: its row was altered or"
                " copied from another; set it again",
                "name",
            ) from None
        await self._audit(tenant, name, "revealed", purpose)
        return value

    async def rotate_master(self, successor: MasterKey | None = None) -> tuple[int, str, str]:
        """Re-wrap every data key under a new master key (``successor``, or a new random one when the key
        is the key file's, which it then replaces); answers how many secrets, the old key's id and the new's."""
        async with self._rotating, stored.rotation(self._pool) as conn:
            if conn is None:
                raise Conflict("master-key-changed", "another control plane is rotating the master key")
            old, file = self._key, self._source.file
            if successor is None and file is None:
                raise Conflict(
                    "master-key-in-environment",
                    "the master key comes from AF_MASTER_KEY: give the new key (af secret rotate-master"
                    " --new-key-file FILE), and set AF_MASTER_KEY to it before the next start",
                    "new_key",
                )
            new = successor or MasterKey.generate()
            if new.id == old.id:
                raise Invalid("validation-error", "the new master key is the current one", "new_key")
            if file is not None:
                await asyncio.to_thread(master_key.stage, file, old, new)
            try:
                count = await stored.rewrap_all(conn, old.id, new.id, functools.partial(_rewrapped, old, new))
            except BaseException:
                if file is not None:
                    await asyncio.to_thread(master_key.discard_staged, file)
                raise
            if count is None:
                if file is not None:
                    await asyncio.to_thread(master_key.discard_staged, file)
                raise Conflict("master-key-changed", "another control plane rotated the master key meanwhile")
            self._key = new
            if file is not None:
                await asyncio.to_thread(master_key.promote, file, new)
            return count, old.id, new.id

    async def _follow_rotation(self, seen: MasterKey) -> None:
        """The database names another master key than ``seen``: take it from the key file, where the
        control plane that rotated it put it."""
        if self._key is not seen:  # another call of this process has followed it already
            return
        wrapped_by = await stored.current_master(self._pool)
        if wrapped_by == seen.id:
            return
        if self._source.file is not None:
            source = await asyncio.to_thread(master_key.load, "", str(self._source.file))
            for candidate in (source.key, source.staged):
                if candidate is not None and candidate.id == wrapped_by:
                    self._key = candidate
                    return
        raise Unavailable(
            "master-key-changed",
            f"the master key was rotated to {wrapped_by} and this control plane does not hold it: restart it with"
            " that key",
        )

    async def _audit(self, scope: str, name: str, outcome: str, purpose: str) -> None:
        entry = audit.AuditEntry(
            tenant=scope, actor=ACTOR, action="secret.reveal", target=name, outcome=outcome, detail=purpose
        )
        await audit.record(self._pool, entry)
