"""Tool kb-search: searches a small built-in knowledge base, offline and deterministic.

stdin:  {"query": str, "collection": "tickets" | "sources" | "conventions", "limit": int}   (limit: 3)
stdout: {"hits": [{"id": str, "title": str, "text": str, "score": int}]}

A document's score is the number of the query's distinct words (lower case, three letters or more) found
in its title or text; hits are the best scoring first (ties by id), those scoring 0 left out.
Exits 2 on bad input.
"""

import json
import re
import sys

WORD = re.compile(r"[a-z0-9]{3,}")
DOCUMENTS = {
    "tickets": [
        ("T-101", "Login crashes on empty password", "The login handler divided by the password length."),
        ("T-102", "Session expires too early", "The session cookie's max-age was set in minutes, not seconds."),
        ("T-103", "Export to CSV drops unicode", "The CSV file was opened without an encoding: use utf-8."),
    ],
    "sources": [
        ("S-1", "Tides and the moon", "Tides come mainly from the moon's gravity; the sun adds spring and neap tides."),
        ("S-2", "Tidal energy", "Tidal plants turn the rise and fall of the sea into power; La Rance runs since 1966."),
        ("S-3", "Ocean currents", "Currents are driven by wind, the earth's rotation, temperature and salinity."),
    ],
    "conventions": [
        ("C-1", "REST resource naming", "Plural nouns for collections (/todos), items by id (/todos/{id})."),
        ("C-2", "Status codes", "201 with the created resource, 404 for an unknown id, 422 for invalid input."),
        ("C-3", "Partial updates", "PATCH with only the changed fields updates a resource in part."),
    ],
}


def search(request: object) -> dict[str, object]:
    if not isinstance(request, dict) or not isinstance(request.get("query"), str):
        raise ValueError("input must be an object with a 'query' string")
    collection = request.get("collection")
    if collection not in DOCUMENTS:
        raise ValueError(f"collection must be one of {', '.join(DOCUMENTS)}, not {collection!r}")
    limit = request.get("limit", 3)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise ValueError("limit must be a positive integer")
    words = set(WORD.findall(request["query"].lower()))
    scored = []
    for doc_id, title, text in DOCUMENTS[collection]:
        score = len(words & set(WORD.findall(f"{title} {text}".lower())))
        if score:
            scored.append({"id": doc_id, "title": title, "text": text, "score": score})
    scored.sort(key=lambda hit: (-hit["score"], hit["id"]))
    return {"hits": scored[:limit]}


def main() -> int:
    try:
        print(json.dumps(search(json.load(sys.stdin))))
    except ValueError as error:  # bad JSON included
        print(f"kb-search: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
