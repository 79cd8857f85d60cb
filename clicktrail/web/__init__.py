"""The Flask edge: acknowledges events once they are queued. Never talks to Kafka for data."""

from __future__ import annotations

import click
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from clicktrail.config import ConfigError, Settings
from clicktrail.intake import MAX_REQUEST_BYTES
from clicktrail.logs import configure_logging
from clicktrail.web.errors import register_error_handlers
from clicktrail.web.observe import instrument
from clicktrail.web.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build the API. ``services`` replaces the real dependencies (tests pass twins)."""
    if settings is None:
        try:
            settings = Settings.from_env()
        except ConfigError as exc:
            if click.get_current_context(silent=True) is None:
                raise  # serving with a broken configuration: fail at start, loudly
            return _commands_only(exc)
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

    from clicktrail.web import (
        cli,
        cors,
        debugger,
        docs,
        ingest,
        ops,
        receipts,
        sessions,
        shortpaths,
        sourceconfig,
        users,
    )

    for module in (
        ingest, shortpaths, sessions, users, receipts, ops, debugger, docs, sourceconfig,
    ):  # fmt: skip
        app.register_blueprint(module.bp)
    cors.install(app)
    cli.register(app)
    register_error_handlers(app)
    return app


def _commands_only(error: ConfigError) -> Flask:
    """The Flask CLI's app when the environment holds a malformed value: no routes, only the
    commands, so that ``clicktrail doctor`` can say what is wrong (the others say it too)."""
    from clicktrail.web import cli

    app = Flask(__name__, static_folder=None)
    app.config["CLICKTRAIL_CONFIG_ERROR"] = error
    cli.register(app)
    return app
