"""Routes of the model gateway: deployments and their health, the tenant's recording policy, the calls
recorded, and the OpenAI-compatible chat completions (whole or streamed) and embeddings."""

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, get, post, put
from litestar.params import Parameter
from litestar.response import Stream

from bus.messages import encode
from control_plane.api.answers import json_response as _json
from control_plane.api.answers import record as _audit
from control_plane.api.problems import Problem
from control_plane.api.run_ids import resolve_run_id
from control_plane.api.scopes import ScopeQuery, acting_in, shown_scope
from control_plane.gateway import CallContext
from control_plane.gateway.deployments import Deployment
from control_plane.gateway.documents import TIERS
from control_plane.gateway.streams import ChatStream
from control_plane.security.identity import Identity
from control_plane.services import Services
from registry import llm_calls


class RecordPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How much of its prompts and responses the tenant lets the gateway record."""

    record: Literal["full", "metadata"]


def model_view(services: Services, deployment: Deployment) -> dict[str, Any]:
    """A deployment as ``GET /v1/models`` shows it: its document, its scope and its health now."""
    seen = services.gateway.board.view(deployment.key)
    spec: dict[str, Any] = msgspec.to_builtins(deployment.spec)
    return {
        "name": deployment.name,
        "scope": shown_scope(deployment.scope),
        "spec": spec,
        "health": {
            "state": seen.state,
            "cooldown_seconds": round(seen.cooling_seconds, 3),
            "reason": seen.health.reason if seen.cooling_seconds > 0 or seen.health.failures else None,
            "consecutive_failures": seen.health.failures,
            "latency_p50_ms": None if seen.latency_p50_ms is None else round(seen.latency_p50_ms, 3),
            "latency_ewma_ms": None if seen.latency_ewma_ms is None else round(seen.latency_ewma_ms, 3),
            "error_rate": round(seen.error_rate, 4),
            "calls_last_minute": seen.calls,
            "tokens_last_minute": seen.tokens,
        },
    }


@post("/v1/models", status_code=201, opt={"permission": ("models", "write")})
async def apply_model(
    request: Request[Any, Any, Any],
    data: dict[str, Any],
    services: Services,
    identity: Identity,
    in_scope: ScopeQuery = "tenant",
) -> Response[bytes]:
    """Apply a model deployment (``scope=platform``: one every tenant may use; platform admins): created 201,
    updated or unchanged 200."""
    where = await acting_in(services, identity, in_scope, ("models", "write"))
    deployment, _, outcome = await services.gateway.deployments.apply(where, data)
    await _audit(request, services, identity, "model.apply", f"{where}/{deployment.name}", outcome)
    answer = {**model_view(services, deployment), "outcome": outcome}
    return _json(answer, 201 if outcome == "created" else 200)


@get("/v1/models", opt={"permission": ("models", "read")})
async def list_models(services: Services, identity: Identity) -> Response[bytes]:
    """The deployments the tenant may call (its own and the platform's), each with its health, and each
    tier's failover chain in order."""
    visible = await services.gateway.deployments.visible(identity.tenant)
    items = [model_view(services, d) for d in visible.values()]
    chains = {
        tier: [d.name for d in sorted(visible.values(), key=lambda d: (d.spec.order, d.name)) if d.spec.tier == tier]
        for tier in TIERS
    }
    return _json({"items": items, "tiers": chains})


@get("/v1/models/{name:str}", opt={"permission": ("models", "read")})
async def get_model(name: str, services: Services, identity: Identity) -> Response[bytes]:
    deployment = (await services.gateway.deployments.visible(identity.tenant)).get(name)
    if deployment is None:
        raise Problem(404, "model-not-found", f"no model deployment {name!r}", "name")
    return _json(model_view(services, deployment))


@delete("/v1/models/{name:str}", status_code=200, opt={"permission": ("models", "write")})
async def delete_model(
    request: Request[Any, Any, Any], name: str, services: Services, identity: Identity, in_scope: ScopeQuery = "tenant"
) -> Response[bytes]:
    where = await acting_in(services, identity, in_scope, ("models", "write"))
    await services.gateway.deployments.delete(where, name)
    await _audit(request, services, identity, "model.delete", f"{where}/{name}", "deleted")
    return _json({"name": name, "deleted": True})


@get("/v1/llm/settings", opt={"permission": ("models", "read")})
async def get_llm_settings(services: Services, identity: Identity) -> Response[bytes]:
    return _json({"record": await services.gateway.recorder.policy(identity.tenant)})


@put("/v1/llm/settings", opt={"permission": ("llm", "configure")})
async def put_llm_settings(
    request: Request[Any, Any, Any], data: RecordPolicy, services: Services, identity: Identity
) -> Response[bytes]:
    """``record: metadata`` keeps no prompt or response text in the call records, only their shape."""
    await services.gateway.recorder.set_policy(identity.tenant, data.record)
    await _audit(request, services, identity, "llm.settings", f"record={data.record}", "updated")
    return _json({"record": data.record})


@get("/v1/llm/calls", opt={"permission": ("models", "read")})
async def list_calls(
    services: Services,
    identity: Identity,
    run_id: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> Response[bytes]:
    """The tenant's model calls, newest first (a run's, in order, with ``run_id``, which may be the start of
    the run's id), each with its attempts."""
    if run_id is not None:
        run_id = await resolve_run_id(services, identity.tenant, run_id)
    rows = await llm_calls.recent(services.pool, identity.tenant, run_id=run_id, limit=limit)
    raw = {"attempts", "prompt", "response"}
    items = [
        {
            **{k: v for k, v in msgspec.structs.asdict(row).items() if k not in raw},
            "at": row.at.isoformat(),
            **{k: None if getattr(row, k) is None else msgspec.Raw(getattr(row, k).encode()) for k in raw},
        }
        for row in rows
    ]
    return _json({"items": items})


def _context(identity: Identity) -> CallContext:
    return CallContext(tenant=identity.tenant, caller=f"api:{identity.actor}")


@post("/v1/llm/chat/completions", status_code=200, opt={"permission": ("llm", "call")})
async def chat_completions(data: dict[str, Any], services: Services, identity: Identity) -> Response[Any]:
    """OpenAI's chat completions: ``model`` is a tier (``tier2``) or a deployment's name; ``stream: true``
    answers Server-Sent Events of ``chat.completion.chunk`` ending with ``data: [DONE]``."""
    if data.get("stream") is True:
        stream = await services.gateway.stream(data, context=_context(identity))
        return Stream(_sse(stream), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return _json(await services.gateway.chat(data, context=_context(identity)))


async def _sse(stream: ChatStream) -> AsyncIterator[bytes]:
    async for chunk in stream.chunks():
        yield b"data: " + encode(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


@post("/v1/llm/embeddings", status_code=200, opt={"permission": ("llm", "call")})
async def embeddings(data: dict[str, Any], services: Services, identity: Identity) -> Response[bytes]:
    """OpenAI's embeddings: ``model`` names an embedding deployment (or a tier of them)."""
    return _json(await services.gateway.embed(data, context=_context(identity)))


ROUTES = [
    apply_model,
    list_models,
    get_model,
    delete_model,
    get_llm_settings,
    put_llm_settings,
    list_calls,
    chat_completions,
    embeddings,
]
