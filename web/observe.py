"""What makes the API observable: request ids in every log line and response, /metrics,
OpenTelemetry server spans, and Sentry."""

from __future__ import annotations

import hmac
import re
import uuid

from flask import Flask, Response, g, request
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from prometheus_flask_exporter import PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from clicktrail.config import Settings
from clicktrail.errors import Unauthorized
from clicktrail.logs import bind, clear
from clicktrail.telemetry import setup_sentry, setup_tracing

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_UNTRACED = "livez,readyz,metrics"
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

    FlaskInstrumentor().instrument_app(app, excluded_urls=_UNTRACED)  # type: ignore[no-untyped-call]
    _metrics_exporter(settings).init_app(app)
