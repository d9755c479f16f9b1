"""Tool py-outline: the outline of a Python module, read with the standard library's ast.

stdin:  {"code": str}
stdout: {"lines": int, "imports": [str], "classes": [str],
         "functions": [{"name": str, "line": int, "args": int, "lines": int, "branches": int, "docstring": bool}]}

imports are the modules imported, sorted, each once; branches counts the if/for/while/try/with/boolean
operators inside a function. Exits 2 on bad input or code that does not parse, naming the line.
"""

import ast
import json
import sys

BRANCHES = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.With, ast.AsyncWith, ast.BoolOp, ast.IfExp)


def imports(tree: ast.AST) -> list[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return sorted(found)


def function(node: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, object]:
    arguments = node.args
    count = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
    return {
        "name": node.name,
        "line": node.lineno,
        "args": count,
        "lines": (node.end_lineno or node.lineno) - node.lineno + 1,
        "branches": sum(isinstance(inner, BRANCHES) for inner in ast.walk(node)),
        "docstring": ast.get_docstring(node) is not None,
    }


def outline(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("code"), str):
        raise ValueError("input must be an object with a 'code' string")
    code = request["code"]
    try:
        tree = ast.parse(code)
    except SyntaxError as error:
        raise ValueError(f"the code does not parse: {error.msg} (line {error.lineno})") from None
    return {
        "lines": len(code.splitlines()),
        "imports": imports(tree),
        "classes": [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)],
        "functions": [
            function(node) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        ],
    }


def main() -> int:
    try:
        print(json.dumps(outline(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"py-outline: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
