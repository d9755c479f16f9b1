"""Tool py-check: runs Python code and checks calls of it against expected values.

stdin:  {"code": str, "cases": [{"call": str, "expect": any}]}     (expect is optional)
stdout: {"passed": bool, "code": str,
         "results": [{"call": str, "ok": bool, "value": any, "error": str | null}]}

code may be a Markdown answer: its first fenced block is the code then (what a model answers). Each call is
an expression evaluated in the module's namespace; a case passes when it raises nothing and, if it names
one, its value equals expect. A value that is not JSON shows as its repr. passed holds when every case
passed and there was at least one. The tool runs in its sandbox, so the code runs there too. Exits 2 on bad
input (code that does not compile is a failed check, not bad input).
"""

import json
import re
import sys

FENCE = re.compile(r"```[\w+-]*\n(.*?)```", re.DOTALL)


def code_of(text: str) -> str:
    fenced = FENCE.search(text)
    return fenced.group(1) if fenced else text


def jsonable(value: object) -> object:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def run_case(namespace: dict[str, object], case: dict[str, object]) -> dict[str, object]:
    call = case["call"]
    try:
        value = eval(str(call), namespace)  # running the code is this tool's job
    except Exception as error:
        return {"call": call, "ok": False, "value": None, "error": f"{type(error).__name__}: {error}"}
    ok = "expect" not in case or value == case["expect"]
    error = None if ok else f"expected {case['expect']!r}, got {value!r}"
    return {"call": call, "ok": ok, "value": jsonable(value), "error": error}


def check(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("code"), str):
        raise ValueError("input must be an object with a 'code' string")
    cases = request.get("cases")
    if not isinstance(cases, list) or not all(isinstance(c, dict) and isinstance(c.get("call"), str) for c in cases):
        raise ValueError("'cases' must be a list of objects with a 'call' string")
    code = code_of(request["code"])
    namespace: dict[str, object] = {"__name__": "checked"}
    try:
        exec(compile(code, "checked.py", "exec"), namespace)
    except Exception as error:
        failed = f"the code does not run: {type(error).__name__}: {error}"
        results = [{"call": case["call"], "ok": False, "value": None, "error": failed} for case in cases]
    else:
        results = [run_case(namespace, case) for case in cases]
    return {"passed": bool(results) and all(r["ok"] for r in results), "code": code, "results": results}


def main() -> int:
    try:
        print(json.dumps(check(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"py-check: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
