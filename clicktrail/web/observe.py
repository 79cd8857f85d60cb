"""What makes the API observable: request ids in every log line and response, /metrics,
OpenTelemetry server spans, and Sentry."""

from __future__ import annotations

import hmac
import re
import uuid

from flask import Flask, Response, g, request
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from clicktrail.config import Settings
from clicktrail.errors import Unauthorized
from clicktrail.logs import bind, clear
from clicktrail.telemetry import context_of, setup_sentry, setup_tracing, start_span

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNTRACED = frozenset({"/livez", "/readyz", "/metrics"})
# Metric labels and span names take the method, so a method outside these becomes OTHER: a
# client making up methods must not make up series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "OTHER"
_exporter: PrometheusMetrics | None = None


def _metrics_exporter(settings: Settings) -> PrometheusMetrics:
    """One exporter per process (its metrics are registered once), shared by every app built."""
    global _exporter
    if _exporter is None:
        kind = (
            GunicornInternalPrometheusMetrics
            if settings.prometheus_multiproc_dir
            else PrometheusMetrics
        )
        _exporter = kind.for_app_factory(
            path="/metrics",
            group_by="endpoint",
            excluded_paths=["^/metrics$", "^/livez$", "^/readyz$"],
        )
    return _exporter


def instrument(app: Flask, settings: Settings) -> None:
    setup_tracing(settings, "clicktrail-api")
    from sentry_sdk.integrations.flask import FlaskIntegration

    setup_sentry(settings, [FlaskIntegration()])

    @app.before_request
    def bound_method() -> None:
        """Routing already refused the method (405 or 404): only what is recorded changes."""
        if request.method not in _METHODS:
            request.method = OTHER_METHOD

    @app.before_request
    def open_span() -> None:
        """The request's SERVER span, continuing the caller's ``traceparent`` (W3C).

        A few hooks rather than opentelemetry-instrumentation-flask, which costs a third of an
        event's time at the edge gathering attributes most collectors drop."""
        if request.path in _UNTRACED:
            return
        # Unrouted paths share one span name: the path itself is an attribute.
        route = request.url_rule.rule if request.url_rule is not None else "unrouted"
        span = start_span(
            f"{request.method} {route}",
            context=context_of(request.headers.get("traceparent")),
            kind=SpanKind.SERVER,
        )
        if span.is_recording():
            span.set_attributes({"http.request.method": request.method, "url.path": request.path})
            if request.url_rule is not None:
                span.set_attribute("http.route", route)
        g.span, g.span_token = span, otel_context.attach(trace.set_span_in_context(span))

    @app.after_request
    def note_status(response: Response) -> Response:
        span = g.get("span")
        if span is not None and span.is_recording():
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        return response

    @app.teardown_request
    def end_span(error: BaseException | None) -> None:
        span = g.pop("span", None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        otel_context.detach(g.pop("span_token"))
        span.end()

    @app.before_request
    def start_request() -> None:
        clear()
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        bind(request_id=g.request_id)

    @app.after_request
    def finish_request(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-ID"] = g.request_id
        return response

    @app.teardown_request
    def forget_request(_: BaseException | None) -> None:
        clear()

    @app.before_request
    def guard_metrics() -> None:
        """With METRICS_TOKEN set, /metrics wants it as a bearer token."""
        if settings.metrics_token and request.path == "/metrics":
            auth = request.authorization
            token = auth.token if auth is not None and auth.type == "bearer" else ""
            if not hmac.compare_digest((token or "").encode(), settings.metrics_token.encode()):
                raise Unauthorized(
                    "invalid_metrics_token", "send Authorization: Bearer <METRICS_TOKEN>"
                )

    _metrics_exporter(settings).init_app(app)
