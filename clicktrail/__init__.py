"""Clicktrail's shared core: configuration, the event model, schemas, sessions, enrichment,
Kafka and Postgres access, and the pipeline. Imports neither Flask nor Celery."""
