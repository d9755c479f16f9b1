"""Tool contract-check: whether a backend and a frontend implement the endpoints an API design lists.

stdin:  {"design": str, "backend": str, "frontend": str}
stdout: {"ok": bool, "endpoints": [str], "backend_routes": [str], "frontend_calls": [str],
         "missing_in_backend": [str], "missing_in_frontend": [str]}

Endpoints are "METHOD /path": in the design, any "GET /todos" written in its text; in the backend, route
decorators such as @app.post("/todos"); in the frontend, fetch("/todos", {method: "POST"}) calls (GET when
no method is given). Path parameters compare equal however written ({id}, <id>, :id, ${id}). ok holds when
the design lists at least one endpoint and neither side misses any. Exits 2 on bad input.
"""

import json
import re
import sys

DESIGNED = re.compile(r"\b(GET|POST|PUT|PATCH|DELETE)\s+(/[\w/{}<>:.$-]*)")
ROUTE = re.compile(r"@\w+\.(get|post|put|patch|delete)\(\s*['\"]([^'\"]+)['\"]")
FETCH = re.compile(r"fetch\(\s*[`'\"]([^`'\"]+)[`'\"](?:\s*,\s*\{[^}]*?method:\s*['\"](\w+)['\"])?")
PARAMETER = re.compile(r"\{[^}/]*\}|<[^>/]*>|:[\w]+|\$\{[^}/]*\}")


def endpoint(method: str, path: str) -> str:
    return f"{method.upper()} {PARAMETER.sub('{}', path.rstrip('/') or '/')}"


def check(request: object) -> dict[str, object]:
    fields = ("design", "backend", "frontend")
    if not isinstance(request, dict) or not all(isinstance(request.get(f), str) for f in fields):
        raise ValueError("input must be an object with 'design', 'backend' and 'frontend' strings")
    designed = sorted({endpoint(m, p) for m, p in DESIGNED.findall(request["design"])})
    routes = sorted({endpoint(m, p) for m, p in ROUTE.findall(request["backend"])})
    calls = sorted({endpoint(m or "GET", p) for p, m in FETCH.findall(request["frontend"])})
    missing_backend = [e for e in designed if e not in routes]
    missing_frontend = [e for e in designed if e not in calls]
    return {
        "ok": bool(designed) and not missing_backend and not missing_frontend,
        "endpoints": designed,
        "backend_routes": routes,
        "frontend_calls": calls,
        "missing_in_backend": missing_backend,
        "missing_in_frontend": missing_frontend,
    }


def main() -> int:
    try:
        print(json.dumps(check(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"contract-check: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
