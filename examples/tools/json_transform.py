"""Tool json-transform: picks values out of a JSON document by dotted paths.

stdin:  {"data": any, "pick": {"outkey": "dotted.path", ...}}
stdout: {"outkey": value at that path in data, ...}

Each path segment is an object key, or a list index written as a non-negative number ("items.0.name").
Exits 2, naming the path, when a path does not exist in data or the input is malformed.
"""

import json
import re
import sys


def lookup(data: object, path: str) -> object:
    value = data
    segments = path.split(".")
    for depth, segment in enumerate(segments):
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif isinstance(value, list) and re.fullmatch("[0-9]+", segment) and int(segment) < len(value):
            value = value[int(segment)]
        else:
            where = ".".join(segments[:depth]) or "the data"
            raise ValueError(f"path {path!r} not found: {where} has no {segment!r}")
    return value


def transform(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or "data" not in request or not isinstance(request.get("pick"), dict):
        raise ValueError("input must be an object with 'data' and a 'pick' object")
    picks = request["pick"]
    if not all(isinstance(path, str) for path in picks.values()):
        raise ValueError("every path in 'pick' must be a string")
    return {key: lookup(request["data"], path) for key, path in picks.items()}


def main() -> int:
    try:
        print(json.dumps(transform(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"json-transform: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
