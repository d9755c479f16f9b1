"""Upgrading a registry made before roles existed: its keys (all the local admin's) become platform admins."""

import asyncpg
from conftest import ROOT

from control_plane.stack import postgres
from registry import connect, migrate
from registry.db import dsn_with_database, ensure_database
from registry.policy import rules

# The schema as it was before this migration, read once at import (not on the event loop).
BEFORE = [
    (int(p.name[:4]), p.name, p.read_text()) for p in sorted((ROOT / "registry" / "migrations").glob("000[1-4]_*.sql"))
]


async def test_keys_made_before_roles_become_platform_admins_and_others_keep_their_role(
    postgres_server: postgres.PostgresServer,
) -> None:
    await ensure_database(postgres_server.dsn, "upgrade_from_0004")
    dsn = dsn_with_database(postgres_server.dsn, "upgrade_from_0004")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in BEFORE:
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
        await conn.execute("INSERT INTO tenants (name) VALUES ('default'), ('acme')")
        await conn.execute(
            "INSERT INTO api_keys (prefix, tenant, hash, role) VALUES"
            " ('old', 'default', 'h', 'admin'), ('dev', 'acme', 'h', 'developer')"
        )
    finally:
        await conn.close()

    pool = await connect(dsn, min_size=1, max_size=1)
    try:
        assert "0005_auth.sql" in await migrate(pool)
        lines = await rules(pool)
        roles = {row["prefix"]: row["role"] for row in await pool.fetch("SELECT prefix, role FROM api_keys")}
    finally:
        await pool.close()
    assert roles == {"old": "platform-admin", "dev": "developer"}
    assert ["g", "key:old", "platform-admin", "*"] in lines
    assert ["g", "key:dev", "developer", "acme"] in lines
    assert ["p", "viewer", "*", "tools", "read"] in lines
