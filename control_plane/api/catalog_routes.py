"""Routes of the catalog: tools, workflows and agents, registered as immutable versions and read back."""

from typing import Any

from litestar import Request, Response, get, post

from control_plane.api import views
from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.api.problems import Problem
from control_plane.catalog.documents import ToolSpec, check_name_field, check_version, convert, version_as_text
from control_plane.errors import Invalid, NotFound
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import catalog as store


@post("/v1/tools", status_code=201, opt={"permission": ("tools", "write")})
async def register_tool(
    request: Request[Any, Any, Any], data: dict[str, Any], services: Services, identity: Identity
) -> Response[bytes]:
    """Register a tool version (immutable; the same content again is a no-op answered 200); the body is a
    ToolSpec, decoded here so that a whole-number version is taken as its text."""
    spec = convert(version_as_text(data), ToolSpec)
    entry, created = await services.catalog.register_tool(identity.tenant, spec)
    return await _stored(request, services, identity, "tool.register", entry, created)


@get("/v1/tools", opt={"permission": ("tools", "read")})
async def list_tools(services: Services, identity: Identity) -> Response[bytes]:
    return await _list_latest(services, store.Kind.TOOL, identity.tenant)


@get("/v1/tools/{name:str}/versions", opt={"permission": ("tools", "read")})
async def list_tool_versions(name: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _list_versions(services, store.Kind.TOOL, identity.tenant, name)


@get("/v1/tools/{name:str}/versions/{version:str}", opt={"permission": ("tools", "read")})
async def get_tool(name: str, version: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _get_entry(services, store.Kind.TOOL, identity.tenant, name, version)


@post("/v1/workflows", status_code=201, opt={"permission": ("workflows", "write")})
async def apply_workflow(
    request: Request[Any, Any, Any], data: dict[str, Any], services: Services, identity: Identity
) -> Response[bytes]:
    """Apply a workflow version: validated, its tools pinned to versions, stored immutably."""
    entry, created = await services.catalog.register_workflow(identity.tenant, version_as_text(data))
    return await _stored(request, services, identity, "workflow.apply", entry, created)


@post("/v1/agents", status_code=201, opt={"permission": ("agents", "write")})
async def apply_agent(
    request: Request[Any, Any, Any], data: dict[str, Any], services: Services, identity: Identity
) -> Response[bytes]:
    """Apply an agent version: validated with what it names (model, tools, agents), tools pinned, stored immutably."""

    async def model_exists(model: str) -> bool:
        try:
            await services.gateway.deployments.chain(identity.tenant, model, "chat")
        except (NotFound, Invalid):
            return False
        return True

    entry, created = await services.catalog.register_agent(identity.tenant, data, model_exists)
    return await _stored(request, services, identity, "agent.apply", entry, created)


@get("/v1/agents", opt={"permission": ("agents", "read")})
async def list_agents(services: Services, identity: Identity) -> Response[bytes]:
    return await _list_latest(services, store.Kind.AGENT, identity.tenant)


@get("/v1/agents/{name:str}/versions", opt={"permission": ("agents", "read")})
async def list_agent_versions(name: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _list_versions(services, store.Kind.AGENT, identity.tenant, name)


@get("/v1/agents/{name:str}/versions/{version:str}", opt={"permission": ("agents", "read")})
async def get_agent(name: str, version: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _get_entry(services, store.Kind.AGENT, identity.tenant, name, version)


async def _stored(
    request: Request[Any, Any, Any],
    services: Services,
    identity: Identity,
    action: str,
    entry: store.Entry,
    created: bool,
) -> Response[bytes]:
    """Answer a registration (201 created, 200 unchanged) and record it in the audit trail."""
    outcome = "created" if created else "unchanged"
    await _audit(request, services, identity, action, f"{entry.name}@{entry.version}", outcome)
    return _json(views.catalog_entry(entry), 201 if created else 200)


@get("/v1/workflows", opt={"permission": ("workflows", "read")})
async def list_workflows(services: Services, identity: Identity) -> Response[bytes]:
    return await _list_latest(services, store.Kind.WORKFLOW, identity.tenant)


@get("/v1/workflows/{name:str}/versions", opt={"permission": ("workflows", "read")})
async def list_workflow_versions(name: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _list_versions(services, store.Kind.WORKFLOW, identity.tenant, name)


@get("/v1/workflows/{name:str}/versions/{version:str}", opt={"permission": ("workflows", "read")})
async def get_workflow(name: str, version: str, services: Services, identity: Identity) -> Response[bytes]:
    return await _get_entry(services, store.Kind.WORKFLOW, identity.tenant, name, version)


async def _list_latest(services: Services, kind: store.Kind, tenant: str) -> Response[bytes]:
    entries = await store.list_latest(services.pool, kind, tenant)
    return _json({"items": [views.catalog_entry(e) for e in entries]})


async def _list_versions(services: Services, kind: store.Kind, tenant: str, name: str) -> Response[bytes]:
    """Every version of ``name``, highest first; 404 when it has none."""
    check_name_field("name", name, "name")
    entries = await store.list_versions(services.pool, kind, tenant, name)
    if not entries:
        raise Problem(404, "not-found", f"no {kind.value[:-1]} {name}", "name")
    return _json({"items": [views.catalog_entry(e) for e in entries]})


async def _get_entry(services: Services, kind: store.Kind, tenant: str, name: str, version: str) -> Response[bytes]:
    check_name_field("name", name, "name")
    wanted = None if version == "latest" else check_version(version)
    entry = await store.get(services.pool, kind, tenant, name, wanted)
    if entry is None:
        raise Problem(404, "not-found", f"no {kind.value[:-1]} {name}@{version}", "name")
    return _json(views.catalog_entry(entry))


ROUTES = [
    register_tool,
    list_tools,
    list_tool_versions,
    get_tool,
    apply_workflow,
    list_workflows,
    list_workflow_versions,
    get_workflow,
    apply_agent,
    list_agents,
    list_agent_versions,
    get_agent,
]
