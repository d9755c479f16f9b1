"""Tool lint-check: a few lint rules over Python code, with the standard library's ast.

stdin:  {"code": str, "max_line": int}      (max_line defaults to 99)
stdout: {"count": int, "findings": [{"line": int, "rule": str, "message": str}]}

Rules: line-length (a line longer than max_line), todo (a TODO or FIXME comment), bare-except (`except:`),
print (a call of print), docstring (a public function without one), branches (a function with more than
five branches). Findings are ordered by line, then rule. Exits 2 on bad input or code that does not parse.
"""

import ast
import json
import sys

BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.BoolOp, ast.IfExp)
MOST_BRANCHES = 5


def line_findings(code: str, max_line: int) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for number, line in enumerate(code.splitlines(), start=1):
        if len(line) > max_line:
            found.append({"line": number, "rule": "line-length", "message": f"{len(line)} characters > {max_line}"})
        if "TODO" in line or "FIXME" in line:
            found.append({"line": number, "rule": "todo", "message": "an open TODO"})
    return found


def tree_findings(tree: ast.AST) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.type is None:
            found.append({"line": node.lineno, "rule": "bare-except", "message": "catches every exception"})
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            found.append({"line": node.lineno, "rule": "print", "message": "print instead of logging"})
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if not node.name.startswith("_") and ast.get_docstring(node) is None:
                found.append({"line": node.lineno, "rule": "docstring", "message": f"{node.name} has no docstring"})
            branches = sum(isinstance(inner, BRANCHES) for inner in ast.walk(node))
            if branches > MOST_BRANCHES:
                message = f"{node.name} has {branches} branches > {MOST_BRANCHES}"
                found.append({"line": node.lineno, "rule": "branches", "message": message})
    return found


def lint(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("code"), str):
        raise ValueError("input must be an object with a 'code' string")
    max_line = request.get("max_line", 99)
    if not isinstance(max_line, int) or isinstance(max_line, bool) or max_line < 1:
        raise ValueError("max_line must be a positive integer")
    try:
        tree = ast.parse(request["code"])
    except SyntaxError as error:
        raise ValueError(f"the code does not parse: {error.msg} (line {error.lineno})") from None
    findings = line_findings(request["code"], max_line) + tree_findings(tree)
    findings.sort(key=lambda finding: (finding["line"], finding["rule"]))
    return {"count": len(findings), "findings": findings}


def main() -> int:
    try:
        print(json.dumps(lint(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"lint-check: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
