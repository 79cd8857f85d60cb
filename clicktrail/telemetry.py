"""Traces (OpenTelemetry) and error reports (Sentry), set up once per process, after fork.

Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, a process records spans and exports them (OTLP
over HTTP). Without it nothing is recorded, yet the trace goes on: ``start_span`` then hands out
spans that only carry ids, so log lines and ``traceparent`` headers still tie a request's work
together, at a fraction of a recorded span's cost. The path of one request: the API's HTTP
span -> the ingest task's span -> its Redis and Postgres round-trips and the Kafka produce span,
whose context is the ``traceparent`` header of every record it wrote -> the history sink's span
continuing that header -> its Postgres write.

Work done once for several requests (one task for a group of requests, one sink batch for many
traces) runs under ``request_spans``: one span per request, the first current, so that each
round-trip's span (``dependency_span``) is a child of the first request's span and links to the
others'. Dependency spans are made only while spans are recorded: without a provider they cost
one check.

Errors: Sentry when SENTRY_DSN is set, without personal data: no request bodies, no local
variables, and ``before_send`` filters write keys, tokens and IP addresses out of every report.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from clicktrail.config import Settings

tracer = trace.get_tracer("clicktrail")
_propagator = TraceContextTextMapPropagator()
# The spans, beyond the current one, of the requests the work in progress serves.
_also_serving: ContextVar[tuple[trace.Span, ...]] = ContextVar("clicktrail_serving", default=())


# Whether setup_tracing installed a provider or found one: a flag, as the API's check reads the
# environment each time, and dependency spans ask on every round-trip.
_enabled = False


def tracing_enabled() -> bool:
    """Whether this process records spans (``setup_tracing`` installed a provider or found one
    installed)."""
    return _enabled


def setup_tracing(settings: Settings, service: str) -> None:
    """Install this process's tracer provider when spans have somewhere to go (once; a provider
    already set is kept, and used)."""
    global _enabled
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _enabled = True
        return
    if not settings.otel_exporter_otlp_endpoint:
        return
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.version": settings.release,
                "deployment.environment": settings.environment,
            }
        )
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _enabled = True


def start_span(
    name: str, context: Context | None = None, kind: SpanKind = SpanKind.INTERNAL
) -> trace.Span:
    """A span under ``context`` (else under the current span). With no tracer provider installed
    it is not recorded but has ids: the parent's trace id (a new one at the root) and its own."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return tracer.start_span(name, context=context, kind=kind)
    parent = trace.get_current_span(context).get_span_context()
    if parent.is_valid:
        trace_id, flags = parent.trace_id, parent.trace_flags
    else:
        trace_id, flags = random.getrandbits(128) or 1, trace.TraceFlags(trace.TraceFlags.SAMPLED)
    span_id = random.getrandbits(64) or 1
    return trace.NonRecordingSpan(
        trace.SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags)
    )


@contextmanager
def request_spans(
    name: str, traceparents: Sequence[str | None], kind: SpanKind = SpanKind.CONSUMER
) -> Iterator[list[trace.Span]]:
    """One span per request, each continuing its ``traceparent``, around work done for all of
    them at once: the first recorded span is current (log lines and child spans take its
    trace), and each ``dependency_span`` started meanwhile links to the others. An error is
    recorded on every one of them."""
    spans = [start_span(name, context_of(traceparent), kind) for traceparent in traceparents]
    # The first recorded one (a caller may have sampled its trace out): its children are too.
    first = next((span for span in spans if span.is_recording()), spans[0] if spans else None)
    token = otel_context.attach(trace.set_span_in_context(first)) if first else None
    others = _also_serving.set(tuple(span for span in spans if span is not first))
    try:
        yield spans
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        _also_serving.reset(others)
        if token is not None:
            otel_context.detach(token)
        for span in spans:
            span.end()


_NO_SPAN: AbstractContextManager[None] = nullcontext()


def dependency_span(
    name: str, system: str, operation: str, items: int | None = None
) -> AbstractContextManager[trace.Span | None]:
    """A CLIENT span around one round-trip to Redis or Postgres (``system``: ``redis``,
    ``postgresql``), a child of the current span, linked to the other requests it serves. No
    span at all (None) when nothing is recorded or nothing is current: then it costs a flag's
    check, and a call outside any request (a health check, a counter) starts no trace."""
    if not _enabled or not trace.get_current_span().get_span_context().is_valid:
        return _NO_SPAN
    attributes: dict[str, str | int] = {"db.system.name": system, "db.operation.name": operation}
    if items is not None:
        attributes["clicktrail.items"] = items
    links = [trace.Link(s.get_span_context()) for s in _also_serving.get()]
    span = tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes, links=links)
    return trace.use_span(span, end_on_exit=True)


def shutdown_tracing() -> None:
    """Export what is buffered (on process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, if there is one."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def traceparent_of(span: trace.Span) -> str | None:
    """The W3C traceparent naming a span (None for a span that is not recording a trace)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def context_of(traceparent: str | None) -> Context:
    """The context a W3C traceparent names (an empty one when absent or malformed)."""
    return _propagator.extract({"traceparent": traceparent} if traceparent else {})


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span, hex, for log lines."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


# Keys whose values never leave the process (compared lower-case, without - and _).
SENSITIVE_KEYS = frozenset(
    {"writekey", "authorization", "cookie", "setcookie", "password", "admintoken", "ip",
     "ipaddress", "remoteaddr", "xforwardedfor", "xrealip", "token", "secret", "dsn"}
)  # fmt: skip
FILTERED = "[Filtered]"
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9a-fA-F:]*:[0-9a-fA-F:]*(?![\w:])")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


def is_sensitive(key: str) -> bool:
    return key.lower().replace("-", "").replace("_", "") in SENSITIVE_KEYS


def scrub_text(text: str) -> str:
    """Mask IP addresses and URL credentials in free text."""
    text = _URL_CREDENTIALS.sub(r"\1[Filtered]@", text)
    return _IPV6_CANDIDATE.sub(_mask_ipv6, _IPV4.sub(FILTERED, text))


def _mask_ipv6(match: re.Match[str]) -> str:
    """Only real IPv6 addresses (not clock times such as 22:10:34)."""
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return match.group()
    return FILTERED


def scrub(value: Any) -> Any:
    """A copy of a report with sensitive keys filtered and IPs masked, however deep."""
    if isinstance(value, dict):
        return {
            k: FILTERED if isinstance(k, str) and is_sensitive(k) else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    event = scrub(event)
    event.pop("user", None)
    return event


def setup_sentry(settings: Settings, integrations: Sequence[Any]) -> bool:
    """Report errors to Sentry when SENTRY_DSN is set; whether it is."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        release=settings.release,
        environment=settings.environment,
        integrations=list(integrations),
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=_before_send,  # type: ignore[arg-type]
    )
    return True
