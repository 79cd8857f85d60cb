"""WSGI entry point: ``clicktrail api`` (granian) or ``gunicorn clicktrail.web.wsgi:app``, each
process importing it once it has started."""

import gc

from clicktrail.web import create_app

app = create_app()
# What the app built at start lives as long as the process: out of the collector's sight, a
# full collection no longer walks it (about a twentieth of a request's time, measured).
gc.freeze()
