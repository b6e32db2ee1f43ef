# shellcheck shell=bash disable=SC2034  # the scripts that source it use these
# Settings shared by the scripts of deploy/local (sourced, not run).
#
# The defaults are the addresses of deploy/envoy/envoy.yaml (Envoy on :8000, its admin on
# :9901, the upstream on :8080) and of deploy/local/paygress.yaml (the mint on :3338, sockets
# and state in /tmp/paygress-local). Set any of these variables to move a piece elsewhere (the
# tests do, to run beside anything already listening there):
#
#   PAYGRESS_LOCAL_DIR               sockets, state, logs, pid files   /tmp/paygress-local
#   PAYGRESS_LOCAL_MINT_PORT         the nutshell mint                 3338
#   PAYGRESS_LOCAL_UPSTREAM_PORT     the echo upstream                 8080
#   PAYGRESS_LOCAL_ENVOY_PORT        Envoy's listener                  8000
#   PAYGRESS_LOCAL_ENVOY_ADMIN_PORT  Envoy's admin interface           9901
#
# (Not MINT_PORT & co.: nutshell's wallet reads any variable named like one of its settings.)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL=$REPO/deploy/local
VENV=$REPO/.venv
VENV_MINT=$REPO/.venv-mint

DEFAULT_DIR=/tmp/paygress-local
DEFAULT_MINT_PORT=3338
DIR=${PAYGRESS_LOCAL_DIR:-$DEFAULT_DIR}
MINT_PORT=${PAYGRESS_LOCAL_MINT_PORT:-$DEFAULT_MINT_PORT}
UPSTREAM_PORT=${PAYGRESS_LOCAL_UPSTREAM_PORT:-8080}
ENVOY_PORT=${PAYGRESS_LOCAL_ENVOY_PORT:-8000}
ENVOY_ADMIN_PORT=${PAYGRESS_LOCAL_ENVOY_ADMIN_PORT:-9901}
MINT_URL=http://127.0.0.1:$MINT_PORT

die() {
  echo "${0##*/}: $*" >&2
  exit 1
}

# Exits with a hint when the virtualenvs of scripts/bootstrap are missing.
need() {
  local venv
  for venv in "$@"; do
    [ -x "$venv/bin/python" ] || die "$venv is missing: run scripts/bootstrap (or make demo) first"
  done
}

mkdir -p "$DIR"
