"""Settings a running process takes on again: on SIGHUP, and when its ``AF_CONFIG`` file changes.

A reload loads the process's settings as its start did (the same flags, its environment, the file as it is
now) and hands the reloadable ones (``bus.config.RELOADS``) to the process's parts, which it names itself
(``apply``). A load that fails (a malformed value, an unreadable file) is refused with one line, and the
settings in force stay; a changed setting that needs a restart is named in the reload's line and kept.
"""

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from bus import logs
from bus.config import ProcessSettings, SettingsError, reloaded

log = logging.getLogger(__name__)

P = TypeVar("P", bound=ProcessSettings)


class Reloads(Generic[P]):
    def __init__(
        self,
        current: P,
        load: Callable[[], P],
        apply: Callable[[P], Awaitable[None]],
        *,
        config_file: str | None,
        watch_seconds: float,
    ) -> None:
        """``load``: the process's settings as its start loads them; ``apply``: hand the reloaded settings to
        the parts that use them (raising leaves the settings in force as they were); ``config_file`` is looked
        at every ``watch_seconds`` for a change (0: only SIGHUP reloads)."""
        self.current = current
        self._load = load
        self._apply = apply
        self._file = config_file
        self._every = watch_seconds

    async def reload(self, why: str) -> bool:
        """Load the settings again and take on what changed; False if the load was refused."""
        try:
            new = reloaded(self.current, self._load())
            await self._apply(new.settings)
        except Exception as error:  # SettingsError above all; anything apply raises refuses the reload too
            detail = str(error).replace("\n", " ") if isinstance(error, SettingsError) else repr(error)
            log.error("settings not reloaded (%s), those in force stay: %s", why, detail)
            return False
        before, self.current = self.current, new.settings
        changed = ", ".join(f"AF_{name.upper()}={value}" for name, value in new.changed) or "nothing changed"
        restart = ", ".join(f"AF_{name.upper()}" for name in new.need_restart)
        kept = f"; kept until a restart: {restart}" if restart else ""
        # Said at the more verbose of the two levels, so that the line shows whichever way the level went.
        logs.set_level(min(before.log_level, new.settings.log_level, key=_verbosity))
        log.info("settings reloaded (%s): %s%s", why, changed, kept)
        logs.set_level(new.settings.log_level)
        return True

    async def follow(self) -> None:
        """Reload on every SIGHUP and every change of the config file, until cancelled."""
        loop = asyncio.get_running_loop()
        hangup = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, hangup.set)
        try:
            seen = _version(self._file)
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hangup.wait(), self._every if self._file and self._every else None)
                now = _version(self._file)
                if hangup.is_set():
                    hangup.clear()
                    await self.reload("SIGHUP")
                elif now != seen:
                    await self.reload(f"{self._file} changed")
                seen = now
        finally:
            loop.remove_signal_handler(signal.SIGHUP)


def check(settings: ProcessSettings) -> None:
    """What every process checks of the settings they all read (SettingsError naming the first wrong one)."""
    logs.check_log_format(settings.log_format)
    logs.check_log_level(settings.log_level)
    if settings.config_watch_seconds < 0:
        raise SettingsError("AF_CONFIG_WATCH_SECONDS: must be 0 (only SIGHUP reloads) or more")


def _verbosity(level: str) -> int:
    return logging.getLevelNamesMapping()[level.upper()]


def _version(path: str | None) -> tuple[int, int, int] | None:
    """What tells a changed file (replaced, as a Kubernetes ConfigMap's is, or written over): None if absent."""
    if not path:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size
