"""Tool mock-model: a deterministic, offline stand-in for a language model; it needs no key.

stdin:  {"prompt": str, "task": "summarize" | "classify" | "critique"}   (task defaults to "summarize")
stdout: {"text": str, "model": "mock-model-1", "usage": {"input_tokens": int, "output_tokens": int}}

summarize: the prompt's first sentence, then its most frequent words that are not stopwords.
classify:  the label ("bug", "feature", "question", or "other") whose keywords the prompt uses most.
critique:  one remark a line, on the prompt's length, its overused words and its sentence length.
Tokens are words and punctuation marks. The same input always gives the same output. Exits 2 on bad input.
"""

import json
import re
import sys
from collections import Counter

MODEL = "mock-model-1"
TOKEN = re.compile(r"\w+|[^\w\s]")
WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
SENTENCE = re.compile(r".+?(?:[.!?]+(?=\s|$)|$)", re.DOTALL)
# A word list reads best as words.
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my not of on "  # noqa: SIM905
    "or our so that the their then there these this to was we were what when where which who why will with "
    "would you your".split()
)
# Ties go to the label listed first.
LABELS = {
    "bug": {"bug", "error", "crash", "crashes", "broken", "fails", "failed", "exception", "traceback"},
    "feature": {"feature", "add", "support", "allow", "request", "enhancement", "option", "new", "could"},
    "question": {"how", "what", "why", "when", "where", "which", "question", "?"},
}


def keywords(text: str, most: int) -> list[tuple[str, int]]:
    """The `most` most frequent words that are not stopwords, ties in alphabetical order."""
    counts = Counter(word for word in map(str.lower, WORD.findall(text)) if word not in STOPWORDS)
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:most]


def sentences(text: str) -> list[str]:
    return [found.strip() for found in SENTENCE.findall(text) if WORD.search(found)]


def summarize(prompt: str) -> str:
    first = next(iter(sentences(prompt)), "")
    if first and first[-1] not in ".!?":
        first += "."
    listed = ", ".join(word for word, _ in keywords(prompt, 5)) or "none"
    return f"{first} Keywords: {listed}.".lstrip()


def classify(prompt: str) -> str:
    tokens = [token.lower() for token in TOKEN.findall(prompt)]
    scores = {label: sum(token in words for token in tokens) for label, words in LABELS.items()}
    best = max(scores, key=lambda label: scores[label])
    return best if scores[best] else "other"


def critique(prompt: str) -> str:
    words = len(WORD.findall(prompt))
    if words < 20:
        remarks = [f"Too short ({words} words): add context and the expected result."]
    elif words > 300:
        remarks = [f"Long ({words} words): cut what the reader does not need."]
    else:
        remarks = [f"Length is fine ({words} words)."]
    overused = [f"{word} ({count})" for word, count in keywords(prompt, 3) if count >= 3]
    remarks.append(f"Overused words: {', '.join(overused)}." if overused else "No word is overused.")
    average = words / max(len(sentences(prompt)), 1)
    if average > 25:
        remarks.append(f"Sentences are long ({average:.0f} words on average): split them.")
    return "\n".join(f"- {remark}" for remark in remarks)


TASKS = {"summarize": summarize, "classify": classify, "critique": critique}


def answer(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("prompt"), str):
        raise ValueError("input must be an object with a 'prompt' string")
    task = request.get("task", "summarize")
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    text = TASKS[task](request["prompt"])
    usage = {"input_tokens": len(TOKEN.findall(request["prompt"])), "output_tokens": len(TOKEN.findall(text))}
    return {"text": text, "model": MODEL, "usage": usage}


def main() -> int:
    try:
        print(json.dumps(answer(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"mock-model: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
