"""Tracing: OpenTelemetry spans whose context travels in each message's W3C ``traceparent`` header.

Only the API is used until ``setup`` is given an OTLP endpoint: without it no SDK tracer provider is
installed, ``enabled`` stays False and the hot paths skip span work altogether (headers then carry a fresh
random trace context, as before).
"""

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

tracer = trace.get_tracer("agentflow")
_propagator = TraceContextTextMapPropagator()

enabled = False
"""True once spans are exported: read as ``tracing.enabled`` before doing any span work."""


def setup(service: str, endpoint: str) -> None:
    """Export spans of this process (named ``service``) to the OTLP/HTTP collector at ``endpoint``; no-op if
    ``endpoint`` is empty."""
    global enabled
    if not endpoint:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    url = endpoint.rstrip("/")
    if not url.endswith("/v1/traces"):
        url += "/v1/traces"
    # The provider flushes what is buffered when the process exits (it registers itself with atexit).
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    enabled = True


def current_traceparent() -> str | None:
    """The ``traceparent`` of the current span, to put in a message's headers (None: no span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def parent_context(traceparent: str | None) -> Context | None:
    """The context a span continues from, read from a message's ``traceparent`` header."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the current span, if it is recording."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def traceparent_of(span: trace.Span) -> str:
    """The ``traceparent`` that makes what follows a child of ``span`` (not necessarily the current one)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier["traceparent"]
