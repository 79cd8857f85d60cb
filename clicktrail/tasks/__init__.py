"""Celery tasks: thin wrappers that unpack a message, call the pipeline and map its errors."""
