"""The installation this database belongs to: its id, made once with the schema."""

from registry.db import Pool


async def installation_id(pool: Pool) -> str:
    """The id of the stack this database is the store of (the same for every control plane on it)."""
    found: str = await pool.fetchval("SELECT id FROM installation")
    return found
