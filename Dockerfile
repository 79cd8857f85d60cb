# One image for every Clicktrail process: api (default), worker, beat, flower, and the set-up job.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    API_BIND=0.0.0.0:8000

WORKDIR /app
# Production's pins only (no local stack), every file checked against its hash; then the package.
COPY requirements.txt .
RUN pip install --require-hashes -r requirements.txt

COPY pyproject.toml README.md LICENSE ./
COPY clicktrail ./clicktrail
RUN pip install --no-deps . && rm -rf build clicktrail.egg-info

RUN useradd --system --uid 10001 --no-create-home clicktrail
USER clicktrail

EXPOSE 8000
CMD ["clicktrail", "api"]
