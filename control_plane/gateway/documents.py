"""Model deployment documents (``af model apply FILE``, ``POST /v1/models``): decoded and checked once, every
problem reported at its field together.

A deployment is one way to reach one model: a provider (``openai``: any OpenAI-compatible endpoint,
``anthropic``: the Messages API, ``local``: the OpenAI-compatible server at ``AF_LOCAL_MODEL_URL``, ``mock``:
in process), an endpoint, the provider's own model name, the name of the secret holding its key (never the
key), its context window, its prices (per million input and output tokens), its rate limits and the tier
whose failover chain it joins (``order``: lower first; deployments of the same order are balanced by the
router). Names are unique per scope (a tenant, or the platform); a tenant's deployment hides the platform's
of the same name from that tenant.
"""

import re
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import urlsplit

import msgspec

from control_plane.errors import Invalid, field_from_msgspec

TIERS = ("tier1", "tier2", "tier3", "tier4")
"""tier1 light … tier4 expert: what a caller names instead of a model."""
PROVIDERS = ("openai", "anthropic", "local", "mock")
FAULTS = ("429", "500", "timeout", "refused", "garbage", "context-length")
"""The faults the mock provider produces on demand."""
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
PLATFORM = "*"
"""The scope of platform-wide deployments, which every tenant may use."""

Tier = Literal["tier1", "tier2", "tier3", "tier4"]
Mode = Literal["chat", "embedding"]
Price = Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class Prices(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the provider charges, in US dollars per million tokens."""

    input: Price = 0.0
    output: Price = 0.0


class ModelSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """A model deployment as stored; ``model`` defaults to ``name``."""

    name: str
    provider: str
    model: str = ""
    """The provider's name for the model (``gpt-4o-mini``, ``claude-3-5-haiku-latest``)."""
    endpoint: str = ""
    """The API's base URL (``https://api.openai.com/v1``); ``anthropic`` defaults to Anthropic's."""
    credential: str | None = None
    """The name of the tenant's secret holding the API key."""
    mode: Mode = "chat"
    """``chat`` (chat completions) or ``embedding`` (embeddings)."""
    context_window: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 8192
    """Tokens of prompt and answer together."""
    prices: Prices = Prices()
    rpm: PerMinute | None = None
    """Requests per minute the provider allows; the router leaves the deployment alone above it."""
    tpm: PerMinute | None = None
    """Tokens per minute the provider allows."""
    tier: Tier | None = None
    order: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    """Its place in its tier's failover chain: lower first."""
    timeout_seconds: Annotated[float, msgspec.Meta(gt=0, le=3600)] | None = None
    """One attempt's limit (default: the gateway's ``AF_LLM_ATTEMPT_TIMEOUT_SECONDS``)."""
    options: dict[str, Any] = {}
    """Provider options: the mock's script, extra headers, Anthropic's version."""

    @property
    def remote_model(self) -> str:
        return self.model or self.name


class MockTurn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    content: str | None = None
    tool_calls: list["MockToolCall"] | None = None


class MockToolCall(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    arguments: Any = {}


class MockOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The mock provider's script (see ``control_plane.gateway.providers.mock``)."""

    turns: list[MockTurn] = []
    answers: dict[str, str] = {}
    fail: str | None = None
    latency_ms: Annotated[float, msgspec.Meta(ge=0, le=600_000)] = 0.0
    retry_after: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 1.0
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=8192)] = 8
    """Of its embeddings."""


class OpenAIOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    headers: dict[str, str] = {}
    """Sent with every request (``OpenAI-Organization``, say)."""


class LocalOptions(OpenAIOptions, frozen=True, forbid_unknown_fields=True):
    tools: Literal["schema", "native"] = "schema"
    """How a request's tools reach the local model server: ``schema``, described in the system message with
    the reply held to a JSON schema of a call or an answer (``providers.local``), since llama.cpp's server
    drops ``tools`` for a model whose chat template has none, as SmolLM2's has not; ``native``, sent as
    ``tools`` for a model whose template takes them."""


class AnthropicOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    headers: dict[str, str] = {}
    version: str = "2023-06-01"
    """The ``anthropic-version`` header."""
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 4096
    """Sent when a request names none (the Messages API requires it)."""


OPTIONS: dict[str, type[msgspec.Struct]] = {
    "openai": OpenAIOptions,
    "local": LocalOptions,
    "anthropic": AnthropicOptions,
    "mock": MockOptions,
}
ANTHROPIC_ENDPOINT = "https://api.anthropic.com"
OptionsT = TypeVar("OptionsT", bound=msgspec.Struct)


def _problem(field: str, detail: str) -> Invalid:
    return Invalid("invalid-model", detail, field)


def _field_problems(document: dict[str, Any]) -> tuple[list[Invalid], dict[str, Any]]:
    """Each field converted on its own, so that every malformed one is reported, not only the first; also
    the fields that are well-formed, for the checks of their meaning."""
    found: list[Invalid] = []
    good: dict[str, Any] = {}
    known = {f.encode_name: f for f in msgspec.structs.fields(ModelSpec)}
    for key in document:
        if key not in known:
            found.append(_problem(str(key), f"unknown field {key!r}"))
    for name, info in known.items():
        if name not in document:
            if info.required:
                found.append(_problem(name, f"a model deployment needs {name!r}"))
            continue
        problems = _convert_problems(document[name], info.type, name)
        found.extend(problems)
        if not problems:
            good[name] = document[name]
    return found, good


def _convert_problems(value: Any, kind: Any, field: str) -> list[Invalid]:
    try:
        msgspec.convert(value, type=kind)
    except msgspec.ValidationError as error:
        detail, where = field_from_msgspec(str(error))
        return [_problem(".".join(p for p in (field, where or "") if p), detail)]
    return []


def _url_problem(endpoint: str) -> str | None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"endpoint {endpoint!r} is not an http(s) URL"
    return None


def _name_problems(name: Any) -> list[Invalid]:
    if not isinstance(name, str):
        return []
    if not NAME_RE.fullmatch(name):
        return [_problem("name", f"invalid name {name!r}: use 1-63 of a-z, 0-9, '.', '_' and '-'")]
    if name in TIERS:
        return [_problem("name", f"{name} is a tier: name the deployment otherwise")]
    return []


def _meaning_problems(good: dict[str, Any]) -> list[Invalid]:
    """What is wrong beyond the types (of the well-formed fields): names, the provider and what it
    requires, its options."""
    found = _name_problems(good.get("name"))
    endpoint, credential = good.get("endpoint", ""), good.get("credential")
    if endpoint and (problem := _url_problem(endpoint)):
        found.append(_problem("endpoint", problem))
    if credential is not None and not NAME_RE.fullmatch(credential):
        found.append(_problem("credential", f"invalid secret name {credential!r}"))
    provider = good.get("provider")
    if provider is None:
        return found
    if provider not in PROVIDERS:
        found.append(_problem("provider", f"unknown provider {provider!r}: use one of {', '.join(PROVIDERS)}"))
        return found
    if provider == "openai" and not endpoint:
        found.append(_problem("endpoint", "an openai deployment needs its endpoint (the API's base URL)"))
    if provider in ("local", "mock") and endpoint:
        where = "AF_LOCAL_MODEL_URL" if provider == "local" else "no network"
        found.append(_problem("endpoint", f"a {provider} deployment takes no endpoint ({where})"))
    if provider == "anthropic" and good.get("mode") == "embedding":
        found.append(_problem("mode", "the anthropic provider has no embeddings"))
    if "options" in good:
        found.extend(_convert_problems(good["options"], OPTIONS[provider], "options"))
        fail = good["options"].get("fail")
        if provider == "mock" and fail is not None and fail not in FAULTS:
            found.append(_problem("options.fail", f"unknown fault {fail!r}: use one of {', '.join(FAULTS)}"))
    return found


def check_model(document: Any) -> ModelSpec:
    """The deployment a document declares, or one Invalid listing every problem, each at its field."""
    if not isinstance(document, dict):
        raise _problem("", "a model deployment is a JSON object")
    found, good = _field_problems(document)
    found += _meaning_problems(good)
    if found:
        raise Invalid(
            "invalid-model",
            found[0].detail if len(found) == 1 else "; ".join(f"{p.field}: {p.detail}" for p in found),
            found[0].field,
            problems=[{"field": p.field or "", "detail": p.detail, "type": p.kind} for p in found],
        )
    spec = msgspec.convert(document, type=ModelSpec)
    if spec.provider == "anthropic" and not spec.endpoint:
        spec = msgspec.structs.replace(spec, endpoint=ANTHROPIC_ENDPOINT)
    return spec


def options_of(spec: ModelSpec, kind: type[OptionsT]) -> OptionsT:
    """A checked deployment's options as its provider's type."""
    return msgspec.convert(spec.options, type=kind)


assert set(get_args(Tier)) == set(TIERS)
