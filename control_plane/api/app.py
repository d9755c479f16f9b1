"""The HTTP API (v1) on Litestar: every route module's routes, the dependencies each route is given (the
services, and the caller's identity through the gate), and how every error is answered (problem+json)."""

import logging
from typing import Any

import msgspec
from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from bus.messages import encode
from control_plane import dashboard
from control_plane.api import (
    access_routes,
    catalog_routes,
    model_routes,
    ops_routes,
    queue_routes,
    run_routes,
    secret_routes,
    usage_routes,
)
from control_plane.api.gate import admit, permission_of
from control_plane.api.problems import PROBLEM_MEDIA_TYPE, Problem
from control_plane.errors import Refused, field_from_msgspec
from control_plane.services import Services

log = logging.getLogger(__name__)


def _problem_response(problem: Problem) -> Response[bytes]:
    return Response(
        encode(problem.body()), status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=problem.headers
    )


def _on_problem(_: Request[Any, Any, Any], problem: Problem) -> Response[bytes]:
    return _problem_response(problem)


def _on_refused(_: Request[Any, Any, Any], refusal: Refused) -> Response[bytes]:
    return _problem_response(Problem.of(refusal))


def _on_validation(_: Request[Any, Any, Any], error: ValidationException) -> Response[bytes]:
    # Litestar keeps msgspec's message, with the full path of the offending field, as the cause.
    cause = error.__cause__
    if isinstance(cause, msgspec.ValidationError):
        detail, field = field_from_msgspec(str(cause))
        if field is not None:
            field = field.removeprefix("data").lstrip(".") or None
    else:
        extra = error.extra if isinstance(error.extra, list) and error.extra else [{}]
        detail, field = str(extra[0].get("message", error.detail)), extra[0].get("key")
    return _problem_response(Problem(422, "validation-error", detail, field))


def _on_http(_: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    if error.status_code == 400:
        return _problem_response(Problem(400, "malformed-json", f"the body is not valid JSON: {error.detail}"))
    slug = {401: "unauthorized", 404: "not-found", 405: "not-allowed", 503: "unavailable"}.get(
        error.status_code, "validation-error"
    )
    return _problem_response(Problem(error.status_code, slug, str(error.detail)))


def _on_crash(_: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    log.exception("request failed", exc_info=error)
    return _problem_response(Problem(500, "internal", "the control plane failed to answer; see its log"))


BEARER = "bearer"
"""The OpenAPI security scheme of every authenticated route."""
_BEARER_SCHEME = SecurityScheme(
    type="http",
    scheme="bearer",
    bearer_format="JWT",
    description="An access token from POST /v1/auth/token, or an API key (af_<prefix>_<secret>) itself.",
)


async def _services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def create_app(lifespan: Any) -> Litestar:
    app = Litestar(
        route_handlers=[
            *catalog_routes.ROUTES,
            *run_routes.ROUTES,
            *queue_routes.ROUTES,
            *ops_routes.ROUTES,
            *access_routes.ROUTES,
            *model_routes.ROUTES,
            *secret_routes.ROUTES,
            *usage_routes.ROUTES,
            dashboard.router(),
        ],
        state=State(dashboard.state()),
        dependencies={"services": Provide(_services), "identity": Provide(admit)},
        exception_handlers={
            Problem: _on_problem,
            Refused: _on_refused,
            ValidationException: _on_validation,
            HTTPException: _on_http,
            Exception: _on_crash,
        },
        openapi_config=OpenAPIConfig(
            title="AgentFlow",
            version="1.0.0",
            path="/schema",
            components=Components(security_schemes={BEARER: _BEARER_SCHEME}),
        ),
        lifespan=[lifespan],
        logging_config=None,
        debug=False,
    )
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if "identity" not in handler.parsed_fn_signature.parameters:
                continue
            if permission_of(handler.opt) is None:
                raise RuntimeError(f"route {route.path} authenticates but declares no permission")
            # The OpenAPI document is written on its first request, from each handler's security.
            handler.security = [{BEARER: []}]
    return app
