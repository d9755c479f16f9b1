"""What every model call shows of itself: Prometheus series by tenant, model and outcome (never a run id),
and, while tracing is on, a client span in the caller's trace named and dressed by OpenTelemetry's GenAI
semantic conventions (``gen_ai.*``)."""

from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from bus import tracing
from control_plane import metrics
from control_plane.gateway.documents import ModelSpec
from control_plane.gateway.recorder import Trace
from control_plane.gateway.requests import ChatRequest, EmbeddingRequest
from registry.llm_calls import LlmCall


def start(request: ChatRequest | EmbeddingRequest) -> Span | None:
    """The span of a call about to be made, a child of the caller's current span (None: tracing is off)."""
    if not tracing.enabled:
        return None
    operation = "embeddings" if isinstance(request, EmbeddingRequest) else "chat"
    attributes: dict[str, Any] = {"gen_ai.operation.name": operation, "gen_ai.request.model": request.model}
    if isinstance(request, ChatRequest):
        asked = {
            "gen_ai.request.temperature": request.temperature,
            "gen_ai.request.max_tokens": request.answer_limit,
            "gen_ai.request.top_p": request.top_p,
        }
        attributes.update({k: v for k, v in asked.items() if v is not None})
    return tracing.tracer.start_span(f"{operation} {request.model}", kind=SpanKind.CLIENT, attributes=attributes)


def observe(call: LlmCall, trace: Trace, spec: ModelSpec | None) -> None:
    """Count a recorded call, and end its span."""
    model = call.deployment or call.tier or call.requested
    tenant = call.tenant
    metrics.LLM_CALLS.add((tenant, model, call.outcome))
    metrics.LLM_DURATION.observe((tenant, model, call.outcome), call.latency_ms / 1000)
    for attempt in trace.attempts:
        metrics.LLM_ATTEMPTS.add((tenant, attempt.deployment, attempt.outcome))
    if call.ttft_ms is not None:
        metrics.LLM_TTFT.observe((tenant, model), call.ttft_ms / 1000)
    if call.input_tokens:
        metrics.LLM_TOKENS.add((tenant, model, "input"), call.input_tokens)
    if call.output_tokens:
        metrics.LLM_TOKENS.add((tenant, model, "output"), call.output_tokens)
    if call.cost_usd:
        metrics.LLM_COST.add((tenant, model), call.cost_usd)
    if trace.span is not None:
        _finish(trace.span, call, trace, spec)


def _finish(span: Span, call: LlmCall, trace: Trace, spec: ModelSpec | None) -> None:
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
        "agentflow.tenant": call.tenant,
        "agentflow.llm.attempts": len(trace.attempts),
        "agentflow.llm.cost_usd": call.cost_usd,
        "agentflow.llm.stream": call.stream,
    }
    if spec is not None:
        attributes["gen_ai.system"] = spec.provider
        attributes["gen_ai.response.model"] = spec.remote_model
        attributes["agentflow.llm.deployment"] = spec.name
    ids = {"agentflow.llm.tier": call.tier, "agentflow.run_id": call.run_id, "agentflow.task_id": call.task_id}
    attributes.update({k: v for k, v in ids.items() if v is not None})
    if call.ttft_ms is not None:
        attributes["agentflow.llm.ttft_ms"] = call.ttft_ms
    span.set_attributes(attributes)
    if call.outcome != "ok":
        span.set_attribute("error.type", call.outcome)
        span.set_status(Status(StatusCode.ERROR, call.error))
    span.end()
