"""The authorization policy: casbin's rule lines (ptype, v0..v5), read whole by the control plane's adapter."""

from registry.db import Pool


async def rules(pool: Pool) -> list[list[str]]:
    """Every line as ``[ptype, v0, ...]`` without its trailing empty values."""
    rows = await pool.fetch("SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rules ORDER BY id")
    lines = []
    for row in rows:
        values = list(row.values())
        while values and values[-1] == "":
            values.pop()
        lines.append(values)
    return lines
