# syntax=docker/dockerfile:1
# temporal-extauthz: the Envoy ext_authz server for Temporal.
#
#   docker build -t temporal-extauthz:0.1.0 .
#   docker run --read-only --tmpfs /tmp -p 9191:9191 \
#     -e TEMPORAL_AUTH_PROVIDER_URL=https://login.example.com/realms/temporal \
#     -e TEMPORAL_AUTH_CLIENT_ID=temporal temporal-extauthz:0.1.0
#
# Two stages: "build" installs the pinned set (docker/requirements.txt, wheels only) and the
# project into a venv without pip; "runtime" is the same slim Python with that venv, a numeric
# non-root user, and no pip, compiler or package manager caches. Bytecode is compiled at build
# time, so a read-only root filesystem works (only /tmp must be writable, for `--workers`).
# tests/deploy/test_dockerfile.py runs the build stage's RUN steps in a fresh venv.
#
# Pin the base by digest in your release pipeline too: python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY docker/requirements.txt docker/requirements.txt
RUN python -m venv --without-pip /opt/extauthz
RUN python -m pip --python /opt/extauthz/bin/python install --only-binary=:all: --no-deps --requirement docker/requirements.txt
# xds-protos ships an old copy of opentelemetry/proto over opentelemetry-proto's (whichever is
# installed last wins); the tracing extra's OTLP exporter needs opentelemetry-proto's own files.
# The pin equals docker/requirements.txt's (a test checks).
RUN python -m pip --python /opt/extauthz/bin/python install --only-binary=:all: --no-deps --force-reinstall opentelemetry-proto==1.45.2
COPY pyproject.toml README.md ./
COPY extauthz extauthz
RUN python -m pip --python /opt/extauthz/bin/python install --no-deps --no-compile .
RUN python -m pip --python /opt/extauthz/bin/python check
RUN /opt/extauthz/bin/python -m compileall -q -j 0 /opt/extauthz/lib
RUN /opt/extauthz/bin/extauthz --version

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="temporal-extauthz" \
      org.opencontainers.image.description="Envoy external-authorization server that gives a self-hosted Temporal cluster real access control" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/temporal-extauthz/temporal-extauthz" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# no installer in the final image: the base's pip/setuptools/wheel go too
RUN python -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null || true; \
    groupadd --system --gid 10001 extauthz \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin extauthz
COPY --from=build /opt/extauthz /opt/extauthz
ENV PATH=/opt/extauthz/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXTAUTHZ_LISTEN=0.0.0.0:9191 \
    EXTAUTHZ_LOG_FORMAT=json
USER 10001:10001
WORKDIR /
EXPOSE 9191 9090
ENTRYPOINT ["extauthz", "serve"]
