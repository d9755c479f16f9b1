"""Where the master key comes from: ``AF_MASTER_KEY`` (base64 of 32 bytes), or else a key file only its owner
may read (``AF_MASTER_KEY_FILE``, by default ``$AF_HOME/master.key``), made with a new random key by the first
control plane that starts without one (``af up`` starts it so).

Rotating a file's key goes in steps that leave a crash at any point recoverable:

1. ``stage``: the current key is copied to ``master.key.old`` (the backup) and the new one written to
   ``master.key.next``, both 0600;
2. the database re-wraps every data key under the new key and names it, in one transaction;
3. ``promote``: ``master.key.next`` replaces the file, and only then is the backup removed.

A control plane starting after a crash between 2 and 3 finds the database naming the staged key and
finishes step 3 (``SecretStore.open``); after a crash before 2 the database still names the file's key, and
the next rotation's step 1 clears what is left.
Every function here blocks (file IO): callers run them in a thread.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bus.config import SettingsError
from control_plane.security.envelope import EnvelopeError, MasterKey

FILE_NAME = "master.key"


@dataclass(frozen=True, slots=True)
class KeySource:
    key: MasterKey
    origin: str
    """``AF_MASTER_KEY``, or the key file's path: what a message about the key names."""
    file: Path | None
    """The key file; None when the key comes from ``AF_MASTER_KEY``."""
    staged: MasterKey | None = None
    """The new key of a rotation that did not finish."""


def _staged(file: Path) -> Path:
    return file.with_name(file.name + ".next")


def backup(file: Path) -> Path:
    return file.with_name(file.name + ".old")


def load(master_key: str, master_key_file: str) -> KeySource:
    """The master key the settings name, making the key file first if there is none."""
    if master_key:
        try:
            return KeySource(MasterKey.from_text(master_key), "AF_MASTER_KEY", None)
        except EnvelopeError as error:
            raise SettingsError(f"AF_MASTER_KEY: {error}") from None
    file = Path(master_key_file)
    if not file.exists():
        _write_new(file, MasterKey.generate())
    staged = _staged(file)
    return KeySource(_read(file), str(file), file, _read(staged) if staged.exists() else None)


def _read(file: Path) -> MasterKey:
    try:
        mode = file.stat().st_mode
        text = file.read_text()
    except OSError as error:
        raise SettingsError(f"AF_MASTER_KEY_FILE: cannot read {file}: {type(error).__name__}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"AF_MASTER_KEY_FILE: {file} must be readable by its owner only (chmod 600)")
    try:
        return MasterKey.from_text(text)
    except EnvelopeError as error:
        raise SettingsError(f"AF_MASTER_KEY_FILE: {file}: {error}") from None


def _write_new(file: Path, key: MasterKey) -> None:
    """Write ``key`` to a new file of mode 0600; if another process made the file first, keep its key."""
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(descriptor, "w") as out:
        out.write(key.text() + "\n")
        out.flush()
        os.fsync(out.fileno())


def stage(file: Path, current: MasterKey, successor: MasterKey) -> None:
    """Step 1 of a rotation: the backup of the current key, and the new key beside the file."""
    discard_staged(file)
    _write_new(backup(file), current)
    _write_new(_staged(file), successor)


def promote(file: Path, key: MasterKey) -> None:
    """Step 3: ``key`` (the staged one) becomes the file's, replacing it at once; the backup goes once that
    is done. The key is written from memory, not moved, so that a staged file removed meanwhile loses nothing."""
    fresh = file.with_name(file.name + ".new")
    fresh.unlink(missing_ok=True)
    _write_new(fresh, key)
    os.replace(fresh, file)
    _staged(file).unlink(missing_ok=True)
    backup(file).unlink(missing_ok=True)


def discard_staged(file: Path) -> None:
    """What a rotation that never reached the database left: the staged key and the backup."""
    _staged(file).unlink(missing_ok=True)
    backup(file).unlink(missing_ok=True)
