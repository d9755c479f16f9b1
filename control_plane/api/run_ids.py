"""A run named by its id, or by the start of it: what every route that takes a run id resolves it with.

An id shown by `af runs ls` can be copied whole, or shortened as long as no other run of the tenant starts the
same way, as Docker takes a container's. The lookup is a range of the tenant's id index (registry.run_reads).
"""

from bus import subjects
from control_plane.api.problems import Problem
from control_plane.services import Services
from registry import run_reads

_ID_TEMPLATE = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
_HEX = frozenset("0123456789abcdef")


def _is_id_prefix(value: str) -> bool:
    return 0 < len(value) <= len(_ID_TEMPLATE) and all(
        char == "-" if shape == "-" else char in _HEX for char, shape in zip(value, _ID_TEMPLATE, strict=False)
    )


async def resolve_run_id(services: Services, tenant: str, given: str) -> str:
    """The id of the run that ``given`` names: a whole id as it is, or the start of one that is one run's only.
    404 ``not-found`` when none of the tenant's runs starts so; 409 ``ambiguous-id`` when several do."""
    if subjects.ID_RE.fullmatch(given):
        return given
    prefix = given.lower()
    # Text that cannot start a UUID names no run: answered like any unknown run.
    matches = await run_reads.match_run_ids(services.pool, tenant, prefix) if _is_id_prefix(prefix) else None
    if matches is None or matches.count == 0:
        raise Problem(404, "not-found", f"no run {given}", "id")
    if matches.id is None:
        counted = run_reads.MATCHES_COUNTED
        many = f"more than {counted:,}" if matches.count > counted else str(matches.count)
        raise Problem(409, "ambiguous-id", f"run id prefix {given} matches {many} runs; give more of the id", "id")
    return matches.id
