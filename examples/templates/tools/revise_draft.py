"""Tool revise-draft: applies a reviewer's feedback to a draft as a numbered revision note.

stdin:  {"draft": str, "previous": {"revise": {"text": str}} | null, "feedback": str | null}
stdout: {"text": str, "revision": int}

The text revised is the last round's (previous is a loop's last round of outputs: its revise step's text)
or else the draft; the revision appends a line "[rev N] <the feedback's first line>", N counting the
revision marks already there plus one. A quality gate that scores revision marks (mock-editor's score)
then passes after enough rounds: a deterministic stand-in for an editor, which the same input always
answers the same. Exits 2 on bad input.
"""

import json
import re
import sys

MARK = re.compile(r"\[rev (\d+)\]")
LONGEST_NOTE = 200


def revise(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("draft"), str):
        raise ValueError("input must be an object with a 'draft' string")
    previous, feedback = request.get("previous"), request.get("feedback")
    last = previous.get("revise") if isinstance(previous, dict) else None
    text = last["text"] if isinstance(last, dict) and isinstance(last.get("text"), str) else request["draft"]
    lines = feedback.strip().splitlines() if isinstance(feedback, str) else []
    note = lines[0][:LONGEST_NOTE] if lines else "tightened"
    revision = len(MARK.findall(text)) + 1
    return {"text": f"{text}\n[rev {revision}] {note}", "revision": revision}


def main() -> int:
    try:
        print(json.dumps(revise(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"revise-draft: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
