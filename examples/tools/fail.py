"""Tool fail: always fails, for tests of failed runs.

stdin:  {"reason": str} (optional; any input is accepted)
stdout: nothing. Writes the reason to stderr and exits 3.
"""

import json
import sys

EXIT_CODE = 3


def main() -> int:
    try:
        request = json.load(sys.stdin)
    except ValueError:
        request = None
    reason = request.get("reason") if isinstance(request, dict) else None
    print(f"fail: {reason if isinstance(reason, str) else 'this tool always fails'}", file=sys.stderr)
    return EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
