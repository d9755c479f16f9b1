"""Tool review-report: joins a change's outline and its reviews into one Markdown report and a verdict.

stdin:  {"path": str, "outline": object (py-outline's output), "architecture": str | null,
         "quality": str | null, "lint": object | null (lint-check's output)}
stdout: {"verdict": "approve" | "changes requested", "functions": int, "findings": int, "report": str}

The verdict is "changes requested" when a review says "request changes" (any case) or lint found anything,
else "approve". A review left out (null) shows as "(none)". Exits 2 on bad input.
"""

import json
import sys


def text_of(value: object) -> str:
    return value.strip() if isinstance(value, str) and value.strip() else "(none)"


def report(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("outline"), dict):
        raise ValueError("input must be an object with an 'outline' object")
    outline, lint = request["outline"], request.get("lint") or {}
    functions = outline.get("functions") or []
    findings = (lint.get("findings") or []) if isinstance(lint, dict) else []
    reviews = [text_of(request.get("architecture")), text_of(request.get("quality"))]
    wanted = any("request changes" in review.lower() for review in reviews) or bool(findings)
    lines = [
        f"# Review of {request.get('path') or 'the change'}",
        f"{outline.get('lines', 0)} lines, {len(functions)} functions, imports: "
        + (", ".join(outline.get("imports") or []) or "none"),
        "## Architecture",
        reviews[0],
        "## Quality",
        reviews[1],
    ]
    if findings:
        lines += ["## Lint", *(f"- line {f['line']}: {f['rule']}: {f['message']}" for f in findings)]
    verdict = "changes requested" if wanted else "approve"
    lines += ["## Verdict", verdict]
    return {"verdict": verdict, "functions": len(functions), "findings": len(findings), "report": "\n\n".join(lines)}


def main() -> int:
    try:
        print(json.dumps(report(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"review-report: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
