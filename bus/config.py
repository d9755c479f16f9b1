"""Settings of AgentFlow's processes: flags over ``AF_*`` environment over a TOML file over defaults.

Lives beside the wire because every process (control plane, worker) connects to the bus and reads its
settings the same way: each process declares its own frozen dataclass on top of ProcessSettings (what they all
read) and loads it with ``load``, once, at its start.

A setting's name is its field's (``nats_url``: ``AF_NATS_URL``, ``nats_url`` in the file, the flag
``nats_url``), or the name the field's metadata gives as ``setting``. A field whose type is a dataclass of its
own (a group, such as the sandbox's settings) is read from the same layers: each of its fields is a setting
beside the others.

A setting whose field's metadata is ``RELOADS`` is taken on by a running process at a reload (``bus.reload``:
SIGHUP, or its ``AF_CONFIG`` file changed): ``reloaded`` keeps every other setting as the process started
with it, since those are built into connections, listeners and consumers that only a restart makes again.
"""

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as setting_field
from pathlib import Path
from typing import Any, Generic, TypeVar


class SettingsError(ValueError):
    """A missing or malformed setting; the message names it."""


RELOADS: Mapping[str, Any] = {"reloads": True}
"""The metadata of a field a running process takes on again at a reload (the others need a restart)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessSettings:
    """What every AgentFlow server process reads: where the bus is and who it is there, how it logs and where
    its traces go."""

    nats_url: str = "nats://127.0.0.1:4222"
    """``AF_NATS_URL``: the NATS server with JetStream, or several servers of one cluster, comma-separated."""
    nats_user: str = ""
    """``AF_NATS_USER``: this process's NATS user, where the server requires one (``af up`` gives each
    process its own)."""
    nats_password: str = ""
    """``AF_NATS_PASSWORD``: that user's password."""
    log_level: str = setting_field(default="info", metadata=RELOADS)
    """``AF_LOG_LEVEL``: debug, info, warning or error (debug logs every HTTP request too)."""
    log_format: str = "auto"
    """``AF_LOG_FORMAT``: ``json`` (JSON lines), ``text``, or ``auto`` (text on a terminal, JSON otherwise)."""
    otlp_endpoint: str = ""
    """``AF_OTLP_ENDPOINT``: an OTLP/HTTP collector (``http://host:4318``) to send traces to; unset, none
    are recorded."""
    config_watch_seconds: float = 2.0
    """``AF_CONFIG_WATCH_SECONDS``: how often a running process looks at its ``AF_CONFIG`` file for a change
    to reload (0: only SIGHUP reloads)."""


S = TypeVar("S")


def load(
    kind: type[S], section: str, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> S:
    """Build ``kind`` (a dataclass) from its sources; ``section`` is its table in the ``AF_CONFIG`` file."""
    env = os.environ if env is None else env
    names = set(_settings(kind))
    values: dict[str, Any] = {}
    path = config_file(env)
    if path:
        try:
            values.update(tomllib.loads(Path(path).read_text()).get(section, {}))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"AF_CONFIG: cannot read {path}: {error}") from error
    for name in names:
        raw = env.get(f"AF_{name.upper()}")
        if raw is not None:
            values[name] = raw
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    unknown = sorted(set(values) - names)
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r} in [{section}] of AF_CONFIG")
    return _build(kind, values)


def config_file(env: Mapping[str, str] | None = None) -> str | None:
    """The TOML file of the settings (``AF_CONFIG``), if one is named."""
    return (os.environ if env is None else env).get("AF_CONFIG") or None


def _settings(kind: type[Any]) -> dict[str, Any]:
    """The settings of ``kind`` and of its groups, by name, with the type of each."""
    found: dict[str, Any] = {}
    types = typing.get_type_hints(kind)
    for field in dataclasses.fields(kind):
        if dataclasses.is_dataclass(types[field.name]):
            found.update(_settings(types[field.name]))
        else:
            found[field.metadata.get("setting", field.name)] = types[field.name]
    return found


def _build(kind: type[S], values: Mapping[str, Any]) -> S:
    """``kind`` with the settings in ``values`` (its defaults for the rest), groups included."""
    built: dict[str, Any] = {}
    types = typing.get_type_hints(kind)
    for field in dataclasses.fields(kind):  # type: ignore[arg-type]
        name = field.metadata.get("setting", field.name)
        if dataclasses.is_dataclass(types[field.name]):
            built[field.name] = _build(types[field.name], values)
        elif name in values:
            built[field.name] = _coerce(name, types[field.name], values[name])
    return kind(**built)


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind is int:
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"AF_{name.upper()}: expected a whole number, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"AF_{name.upper()}: expected a number, got {value!r}") from None
    return str(value)


def reloadable(kind: type[Any]) -> list[str]:
    """The names of the settings of ``kind`` (groups included) that a reload changes."""
    found: list[str] = []
    types = typing.get_type_hints(kind)
    for each in dataclasses.fields(kind):
        if dataclasses.is_dataclass(types[each.name]):
            found += reloadable(types[each.name])
        elif each.metadata.get("reloads"):
            found.append(each.metadata.get("setting", each.name))
    return found


@dataclass(frozen=True, slots=True)
class Reloaded(Generic[S]):
    settings: S
    """The settings in force before, with the reloadable ones of the new load."""
    changed: list[tuple[str, Any]]
    """The reloadable settings that changed, by name, with their new values."""
    need_restart: list[str]
    """The names of the settings that changed too but are kept until a restart."""


def reloaded(current: S, new: S) -> Reloaded[S]:
    """What a process running with ``current`` takes of ``new``, a load of its settings made since."""
    changed: list[tuple[str, Any]] = []
    need_restart: list[str] = []

    def merge(old: Any, loaded: Any) -> Any:
        kept: dict[str, Any] = {}
        types = typing.get_type_hints(type(old))
        for each in dataclasses.fields(old):
            before, after = getattr(old, each.name), getattr(loaded, each.name)
            name = each.metadata.get("setting", each.name)
            if dataclasses.is_dataclass(types[each.name]):
                kept[each.name] = merge(before, after)
            elif before == after:
                kept[each.name] = before
            elif each.metadata.get("reloads"):
                kept[each.name] = after
                changed.append((name, after))
            else:
                kept[each.name] = before
                need_restart.append(name)
        return dataclasses.replace(old, **kept)

    return Reloaded(merge(current, new), changed, need_restart)
