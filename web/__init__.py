"""The Flask edge: acknowledges events once they are queued. Never talks to Kafka for data."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from clicktrail.config import Settings
from clicktrail.intake import MAX_REQUEST_BYTES
from clicktrail.logs import configure_logging
from web.errors import register_error_handlers
from web.observe import instrument
from web.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the API. ``services`` replaces the real dependencies (tests pass twins)."""
    settings = settings or Settings.from_env()
    configure_logging(settings)
    app = Flask(__name__, static_folder=None)
    # Gzip bodies are read compressed; their inflated size is capped separately.
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["RETRY_AFTER_SECONDS"] = settings.retry_after_seconds
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.trusted_proxy_count:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxy_count, x_proto=settings.trusted_proxy_count
        )
    app.config["CLICKTRAIL_SETTINGS"] = settings
    app.extensions["clicktrail"] = services or Services.build(settings)
    instrument(app, settings)

    from web import cli, cors, debugger, ingest, ops, sessions, users

    for module in (ingest, sessions, users, ops, debugger):
        app.register_blueprint(module.bp)
    cors.install(app)
    cli.register(app)
    register_error_handlers(app)
    return app
