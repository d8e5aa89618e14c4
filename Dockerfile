# syntax=docker/dockerfile:1
# svc's container image: `svc run` as a non-root user, ready for a read-only root filesystem.
#
#   docker build -t svc:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -v svc-data:/var/lib/svc -p 8080:8080 svc:0.1.0
#
# Two stages: the builder has compilers and pip and turns svc and every dependency into
# wheels installed in a virtual environment; the final stage copies only that environment
# onto python:slim (no compiler, no pip cache, no source tree).
# Writable at run time: /var/lib/svc (audit journal, run summary: a volume) and /tmp (an
# emptyDir or tmpfs); nothing else is written, so readOnlyRootFilesystem works.
# Not built here: no Docker engine runs on the development machines (deploy/README.md).

ARG PYTHON_VERSION=3.11

# ----------------------------------------------------------------------------- builder
FROM python:${PYTHON_VERSION}-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the package build reads (.dockerignore keeps everything else out).
COPY pyproject.toml README.md ./
COPY svc ./svc

# Wheels first (any dependency without a binary wheel is compiled here, where gcc is),
# then a virtual environment installed from those wheels only; pip compiles the .pyc files
# at install time, so the read-only image never needs to write bytecode.
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/svc \
 && /opt/svc/bin/pip install --no-index --find-links /wheels svc \
 && /opt/svc/bin/pip uninstall --yes pip \
 && /opt/svc/bin/svc --help > /dev/null

# ------------------------------------------------------------------------------- final
FROM python:${PYTHON_VERSION}-slim-bookworm

LABEL org.opencontainers.image.title="svc" \
      org.opencontainers.image.description="Observability-first Binance trading service"

# uid/gid 10001: the Kubernetes manifests say runAsUser/runAsGroup/fsGroup 10001.
RUN groupadd --system --gid 10001 svc \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/svc --no-create-home \
      --shell /usr/sbin/nologin svc \
 && install --directory --owner=10001 --group=10001 --mode=0750 /var/lib/svc

COPY --from=builder /opt/svc /opt/svc

# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only; the .pyc files were compiled
# in the builder. Defaults that make sense in any container; Kubernetes sets them again.
ENV PATH=/opt/svc/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    SVC_TELEMETRY_HEALTH_HOST=0.0.0.0 \
    SVC_TELEMETRY_HEALTH_PORT=8080 \
    SVC_AUDIT_PATH=/var/lib/svc/audit.jsonl

WORKDIR /var/lib/svc
VOLUME ["/var/lib/svc"]
USER 10001:10001

# /livez, /readyz, /metrics
EXPOSE 8080
# svc handles SIGTERM itself: the ordered shutdown path within
# SVC_EMERGENCY_SHUTDOWN_BUDGET_SECONDS. It runs as PID 1 (exec form, no shell), so the
# signal reaches it directly.
STOPSIGNAL SIGTERM
ENTRYPOINT ["svc"]
CMD ["run"]
