"""WSGI entry point: ``gunicorn clicktrail.web.wsgi:app``."""

from clicktrail.web import create_app

app = create_app()
