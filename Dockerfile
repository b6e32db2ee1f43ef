# syntax=docker/dockerfile:1
#
# The Paygress container image: the paygress wheel and its runtime dependencies in a virtualenv
# on python:3.11-slim, run as the unprivileged uid/gid 65532. No compilers, no Envoy, no dev
# tools in the final image.
#
#   docker build -t paygress:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Runs with a read-only root filesystem: everything it writes goes to
#   /var/lib/paygress  state (SQLite: the operator wallet and the redeem cache) -> a volume
#   /run/paygress      the Unix socket (ext_authz + wallet admin)            -> an emptyDir
#   /tmp               HOME, scratch                                          -> an emptyDir
# and the configuration is read from /etc/paygress/config.yaml (a ConfigMap in Kubernetes).
#
# tests/deploy/test_image.py performs this file's install steps without a container engine and
# checks the final stage's USER, ENTRYPOINT and CMD; keep the two in step.

# Pin by digest in release pipelines, e.g. python:3.11-slim@sha256:...
ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------
# builder: one wheel for Paygress (its build runs grpcio-tools to generate the admin gRPC stubs
# into the wheel, see setup.py and protos/generate.py), wheels for its runtime dependencies, and
# a virtualenv with exactly those installed.
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (.dockerignore allow-lists the same paths), and the lock.
COPY pyproject.toml setup.py README.md constraints.txt ./
COPY protos/ protos/
COPY paygress/ paygress/

# constraints.txt pins every package at the version CI tested (scripts/deps lock; .venv is
# installed from the same file). As PIP_CONSTRAINT it also pins the isolated build
# environment (setuptools, wheel, and grpcio-tools, whose protoc version decides which
# protobuf and grpcio the generated stubs need at run time).
ENV PIP_CONSTRAINT=/src/constraints.txt

# `pip wheel .` builds the project in an isolated build environment ([build-system] requires)
# and also fetches wheels of the runtime dependencies, pinned; the venv is created without pip
# and filled from that wheelhouse only. The last line fails the build if the wheel lacks a
# module or the generated stubs.
RUN pip wheel --wheel-dir /wheels . \
 && python -m venv --without-pip /opt/paygress \
 && pip --python /opt/paygress/bin/python install --no-index --find-links /wheels /wheels/paygress-*.whl \
 && /opt/paygress/bin/paygress --version \
 && /opt/paygress/bin/python -c "import paygress.server, paygress.v1.admin_pb2_grpc"

# ---------------------------------------------------------------------------------------------
# final: the runtime only.
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE_URL=""

LABEL org.opencontainers.image.title="paygress" \
      org.opencontainers.image.description="Pay-per-use ingress for Kubernetes: an Envoy ext_authz service that sells HTTP access for Cashu ecash" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"

# A named user for tools that look the uid up; its home does not exist (HOME=/tmp below).
# The state and socket directories belong to it; both are mount points in Kubernetes.
RUN groupadd --system --gid 65532 paygress \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin paygress \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/paygress \
 && install -d -o 65532 -g 65532 -m 0770 /run/paygress \
 && install -d -m 0755 /etc/paygress

COPY --from=builder /opt/paygress /opt/paygress

# The built-in configuration: every listener on, no priced route (everything is free) and no
# mint. Mount your own over it (the Helm chart mounts a ConfigMap on /etc/paygress).
COPY <<'EOF' /etc/paygress/config.yaml
# Default configuration of the Paygress image. Replace it: mount a file on this path.
listen:
  socket: /run/paygress/paygress.sock
  socket_mode: "0660"
  tcp: 0.0.0.0:9001
  http: 0.0.0.0:8181
metrics:
  listen: 0.0.0.0:9464
state_dir: /var/lib/paygress
routes: []
EOF

# Bytecode was compiled at install time; never write more (the root filesystem is read-only).
ENV PATH="/opt/paygress/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

USER 65532:65532
WORKDIR /var/lib/paygress

# gRPC (ext_authz + grpc.health.v1) on TCP, HTTP forward-auth, Prometheus /metrics.
EXPOSE 9001 8181 9464

ENTRYPOINT ["paygress"]
CMD ["serve", "--config", "/etc/paygress/config.yaml"]
