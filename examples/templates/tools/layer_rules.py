"""Tool layer-rules: checks a module's imports against the layering rules of a service.

stdin:  {"layer": "handlers" | "services" | "storage", "imports": [str]}
stdout: {"layer": str, "violations": [{"import": str, "rule": str}]}

Handlers may not reach storage drivers (sqlite3, psycopg, sqlalchemy, redis) directly: they go through a
service; services may not import the web framework (flask, fastapi, django); storage may import neither
the web framework nor the handlers. An import matches a rule by its top-level package. Exits 2 on bad input.
"""

import json
import sys

DRIVERS = {"sqlite3", "psycopg", "psycopg2", "sqlalchemy", "redis"}
WEB = {"flask", "fastapi", "django"}
RULES = {
    "handlers": [(DRIVERS, "handlers reach storage through a service, never a driver")],
    "services": [(WEB, "services do not depend on the web framework")],
    "storage": [
        (WEB, "storage does not depend on the web framework"),
        ({"handlers"}, "storage never imports handlers"),
    ],
}


def check(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or request.get("layer") not in RULES:
        raise ValueError(f"input must be an object whose 'layer' is one of {', '.join(RULES)}")
    imports = request.get("imports")
    if not isinstance(imports, list) or not all(isinstance(name, str) for name in imports):
        raise ValueError("'imports' must be a list of module names")
    violations = [
        {"import": name, "rule": rule}
        for name in imports
        for packages, rule in RULES[request["layer"]]
        if name.split(".")[0] in packages
    ]
    return {"layer": request["layer"], "violations": violations}


def main() -> int:
    try:
        print(json.dumps(check(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"layer-rules: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
