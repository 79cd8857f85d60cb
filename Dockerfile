# One image for every Clicktrail process: api (default), worker, beat, flower, and the set-up job.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    API_BIND=0.0.0.0:8000

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY clicktrail ./clicktrail
COPY web ./web
COPY workers ./workers
COPY tasks ./tasks
COPY schemas ./schemas
COPY migrations ./migrations

RUN useradd --system --uid 10001 --no-create-home clicktrail
USER clicktrail

EXPOSE 8000
CMD ["gunicorn", "--config", "python:clicktrail.web.gunicorn_conf", "clicktrail.web.wsgi:app"]
