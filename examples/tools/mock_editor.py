"""Tool mock-editor: a deterministic, offline stand-in for an editing agent and its reviewer.

stdin:  {"task": "revise", "text": str, "feedback": str | null, "previous": object | null}
        {"task": "score", "text": str, "pass_mark": int}        (pass_mark defaults to 8)
stdout: revise: {"text": str, "revision": int}
        score:  {"score": int, "passed": bool, "feedback": str}

revise appends a revision mark ("[rev N]") and, when given, the feedback it answers. In a loop, previous
is the last round's outputs ({"revise": {"text"}, "score": {"feedback"}}, each null before the first
round): then that text is revised, answering that feedback. score rates a text
4 plus 2 per revision mark, up to 10, so a draft passes a gate of 8 after two revisions. The same input
always gives the same output. Exits 2 on bad input.
"""

import json
import re
import sys

MARK = re.compile(r"\[rev (\d+)\]")


def revisions(text: str) -> int:
    return len(MARK.findall(text))


def revise(text: str, feedback: object) -> dict[str, object]:
    revision = revisions(text) + 1
    note = f" (answers: {feedback})" if isinstance(feedback, str) and feedback else ""
    return {"text": f"{text} [rev {revision}]{note}", "revision": revision}


def score(text: str, pass_mark: object) -> dict[str, object]:
    if not isinstance(pass_mark, int) or isinstance(pass_mark, bool):
        raise ValueError("pass_mark must be an integer")
    value = min(10, 4 + 2 * revisions(text))
    feedback = "good to go" if value >= pass_mark else f"score {value} is under {pass_mark}: tighten the argument"
    return {"score": value, "passed": value >= pass_mark, "feedback": feedback}


def answer(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("text"), str):
        raise ValueError("input must be an object with a 'text' string")
    task = request.get("task")
    if task == "revise":
        previous = request.get("previous") or {}
        if isinstance(previous.get("revise"), dict) and isinstance(previous.get("score"), dict):
            return revise(previous["revise"]["text"], previous["score"]["feedback"])
        return revise(request["text"], request.get("feedback"))
    if task == "score":
        return score(request["text"], request.get("pass_mark", 8))
    raise ValueError(f"task must be 'revise' or 'score', not {task!r}")


def main() -> int:
    try:
        print(json.dumps(answer(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"mock-editor: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
