"""The worker side: the Celery app, per-process resources, the beat schedule."""
