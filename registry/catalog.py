"""Versioned, immutable tools, workflows and agents.

The kinds live in tables of the same shape, so one set of functions serves them all; ``Kind`` names the
table and is never built from user input.
"""

import enum
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from registry.db import Pool


class Kind(enum.Enum):
    TOOL = "tools"
    WORKFLOW = "workflows"
    AGENT = "agents"


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored version. ``spec`` is its JSON document as text."""

    tenant: str
    name: str
    version: str
    kind: str | None
    spec: str
    digest: str
    created_at: datetime


def version_key(version: str) -> list[int]:
    """Numeric sort key of a version such as ``1.10.2`` (so 1.10 sorts after 1.9)."""
    return [int(part) for part in version.split(".")]


def _columns(kind: Kind) -> str:
    wf_kind = "kind" if kind is Kind.WORKFLOW else "NULL AS kind"
    return f"tenant, name, version, {wf_kind}, spec::text AS spec, digest, created_at"


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(row["tenant"], row["name"], row["version"], row["kind"], row["spec"], row["digest"], row["created_at"])


async def put(
    pool: Pool, kind: Kind, tenant: str, name: str, version: str, spec: str, digest: str, wf_kind: str | None
) -> tuple[Entry, bool]:
    """Store a version unless it exists; returns the stored entry and whether it was created now.

    The caller compares digests: the same version with another digest is a conflict.
    """
    extra_col, extra_val = (", kind", ", $7") if kind is Kind.WORKFLOW else ("", "")
    args: list[object] = [tenant, name, version, version_key(version), spec, digest]
    if kind is Kind.WORKFLOW:
        args.append(wf_kind)
    row = await pool.fetchrow(
        f"INSERT INTO {kind.value} (tenant, name, version, version_key, spec, digest{extra_col})"
        f" VALUES ($1, $2, $3, $4, $5::jsonb, $6{extra_val}) ON CONFLICT DO NOTHING"
        f" RETURNING {_columns(kind)}",
        *args,
    )
    if row is not None:
        return _entry(row), True
    existing = await get(pool, kind, tenant, name, version)
    assert existing is not None
    return existing, False


async def get(pool: Pool, kind: Kind, tenant: str, name: str, version: str | None) -> Entry | None:
    """One version, or the highest version when ``version`` is None."""
    if version is None:
        row = await pool.fetchrow(
            f"SELECT {_columns(kind)} FROM {kind.value} WHERE tenant = $1 AND name = $2"
            " ORDER BY version_key DESC LIMIT 1",
            tenant,
            name,
        )
    else:
        row = await pool.fetchrow(
            f"SELECT {_columns(kind)} FROM {kind.value} WHERE tenant = $1 AND name = $2 AND version = $3",
            tenant,
            name,
            version,
        )
    return None if row is None else _entry(row)


async def list_latest(pool: Pool, kind: Kind, tenant: str) -> list[Entry]:
    """The highest version of every name, by name."""
    rows = await pool.fetch(
        f"SELECT DISTINCT ON (name) {_columns(kind)} FROM {kind.value} WHERE tenant = $1"
        " ORDER BY name, version_key DESC",
        tenant,
    )
    return [_entry(row) for row in rows]


async def list_versions(pool: Pool, kind: Kind, tenant: str, name: str) -> list[Entry]:
    """Every version of ``name``, highest first."""
    rows = await pool.fetch(
        f"SELECT {_columns(kind)} FROM {kind.value} WHERE tenant = $1 AND name = $2 ORDER BY version_key DESC",
        tenant,
        name,
    )
    return [_entry(row) for row in rows]
