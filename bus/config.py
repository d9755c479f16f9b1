"""Settings of AgentFlow's processes: flags over ``AF_*`` environment over a TOML file over defaults.

Lives beside the wire because every process (control plane, worker) connects to the bus and reads its
settings the same way; each process declares its own frozen dataclass and loads it with ``load``.
"""

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar


class SettingsError(ValueError):
    """A missing or malformed setting; the message names it."""


S = TypeVar("S")


def load(
    kind: type[S], section: str, flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> S:
    """Build ``kind`` (a dataclass) from its sources; ``section`` is its table in the ``AF_CONFIG`` file."""
    env = os.environ if env is None else env
    fields = {f.name: f for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    config_file = env.get("AF_CONFIG")
    if config_file:
        try:
            values.update(tomllib.loads(Path(config_file).read_text()).get(section, {}))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SettingsError(f"AF_CONFIG: cannot read {config_file}: {error}") from error
    for name in fields:
        raw = env.get(f"AF_{name.upper()}")
        if raw is not None:
            values[name] = raw
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise SettingsError(f"unknown setting {unknown[0]!r} in [{section}] of AF_CONFIG")
    return kind(**{name: _coerce(name, fields[name].type, value) for name, value in values.items()})


def _coerce(name: str, kind: Any, value: Any) -> Any:
    if kind in (int, "int"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"AF_{name.upper()}: expected a whole number, got {value!r}") from None
    if kind in (float, "float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"AF_{name.upper()}: expected a number, got {value!r}") from None
    return str(value)
