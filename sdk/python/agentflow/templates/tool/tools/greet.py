"""Tool greet: reads {"name": str} on stdin, writes {"greeting": str} on stdout; exits 2 on bad input."""

import json
import sys


def greet(request: object) -> dict[str, str]:
    name = request.get("name") if isinstance(request, dict) else None
    if not isinstance(name, str) or not name.strip():
        raise ValueError("input must be an object with a non-empty 'name' string")
    return {"greeting": f"Hello, {name.strip()}!"}


def main() -> int:
    try:
        answer = greet(json.load(sys.stdin))
    except ValueError as error:  # json.JSONDecodeError is a ValueError too
        print(f"greet: {error}", file=sys.stderr)
        return 2
    json.dump(answer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
