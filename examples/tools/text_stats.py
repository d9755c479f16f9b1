"""Tool text-stats: counts the words, sentences and characters of a text.

stdin:  {"text": str}
stdout: {"words": int, "sentences": int, "characters": int, "top_words": [[word, count], ...]}

Words are runs of letters and digits (inner apostrophes and hyphens kept), compared case-insensitively;
top_words holds the five most frequent, ties in alphabetical order. A sentence is a stretch of text with at
least one word, ended by '.', '!' or '?' followed by a space or the end, or by the end of the text.
Characters are Unicode code points. Exits 2 on bad input.
"""

import json
import re
import sys
from collections import Counter

WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")


def text_stats(request: object) -> dict[str, object]:
    text = request.get("text") if isinstance(request, dict) else None
    if not isinstance(text, str):
        raise ValueError("input must be an object with a 'text' string")
    words = [word.lower() for word in WORD.findall(text)]
    ranked = sorted(Counter(words).items(), key=lambda item: (-item[1], item[0]))
    return {
        "words": len(words),
        "sentences": sum(1 for part in SENTENCE_END.split(text) if WORD.search(part)),
        "characters": len(text),
        "top_words": [[word, count] for word, count in ranked[:5]],
    }


def main() -> int:
    try:
        print(json.dumps(text_stats(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"text-stats: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
