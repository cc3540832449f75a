# One image for web, workers and beat; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    CROWDLOOP_ENV=production \
    CROWDLOOP_VAR_DIR=/var/lib/crowdloop \
    STATIC_ROOT=/var/lib/crowdloop-static

RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /app crowdloop \
 && mkdir -p /var/lib/crowdloop /var/lib/crowdloop-static \
 && chown crowdloop /var/lib/crowdloop /var/lib/crowdloop-static

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY --chown=crowdloop . .

USER crowdloop
# Collected outside the data volume, by the user that collects again at start in
# docker-compose.yml (into the volume its proxy serves, so an upgrade never serves old files).
RUN SECRET_KEY=build-only-not-secret-build-only-not-secret-build-only \
    CROWDLOOP_ENV=development python manage.py collectstatic --noinput --verbosity 0

EXPOSE 8000
# /healthz answers any Host over plain HTTP (config/healthz.py), as this probe sends it.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--threads", "4"]
