#!/usr/bin/env bash
# Runs keygate's whole test suite. Installs what the tests drive for real and a fresh machine may
# lack (curl, Python `requests` for the vendor-example tests, nginx, Caddy, Chromium, Redis, PostgreSQL's
# server binaries), starts a PostgreSQL of the suite's own (own data directory and port, removed
# at the end), then `cargo test`. The machine's own services are left exactly as they were.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p keygate-core`).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${need_apt[*]} (apt-get)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import requests' >/dev/null 2>&1; then
  echo "scripts/test.sh: installing Python requests (pip)" >&2
  python3 -m pip install -q requests 2>/dev/null || python3 -m pip install -q --break-system-packages requests
fi

# Installs Debian packages a test drives: WHAT (the tests, for the message) PACKAGE... A package
# that would start a system service at install (nginx and Caddy on port 80, Redis on 6379,
# PostgreSQL) must not: its port may be taken, and the machine's services are not the suite's. So a
# policy-rc.d that refuses service starts (Docker images ship one) is put in place for the install
# if there is none. A failed install only says so: the tests then skip (or fail in CI).
apt_install() {
  local what=$1 sudo="" policy_rc=""
  shift
  echo "scripts/test.sh: installing $* (apt-get)" >&2
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! [ -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy_rc" >/dev/null && $sudo chmod 755 "$policy_rc"
  fi
  $sudo apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
    || echo "scripts/test.sh: installing $* failed; $what will skip (or fail in CI)" >&2
  if [ -n "$policy_rc" ]; then $sudo rm -f "$policy_rc"; fi
}

# nginx for the auth_request test (crates/cli/tests/e2e/nginx.rs), which runs it as its own
# non-daemon process on a free port. Debian 12's `nginx` package is the full server (with
# http_auth_request); `nginx-light` is only a transitional package there.
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  apt_install "the nginx test" nginx
fi

# Caddy for the forward_auth test (crates/cli/tests/e2e/caddy.rs), which runs it as its own process
# on free ports with its admin endpoint off.
if ! [ -x /usr/bin/caddy ] && ! command -v caddy >/dev/null 2>&1; then
  apt_install "the Caddy test" caddy
fi

# Chromium and chromedriver for the web console test (crates/cli/tests/e2e/console.rs), which
# starts chromedriver on a free port and drives a headless Chromium from /usr/bin. Debian's
# packages, not a browser download (the test machines reach package registries only).
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
  apt_install "the console test" chromium chromium-driver
fi

# schemathesis for the OpenAPI test (crates/cli/tests/e2e/openapi.rs): from PyPI, pinned, into a
# virtualenv of the project's own under target/ (the machine's Python is left as it is).
schemathesis_venv="${CARGO_TARGET_DIR:-target}/schemathesis-venv"
SCHEMATHESIS_VERSION=4.32.5
if ! "$schemathesis_venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "scripts/test.sh: installing schemathesis $SCHEMATHESIS_VERSION (pip, into $schemathesis_venv)" >&2
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null || true
  fi
  rm -rf "$schemathesis_venv"
  python3 -m venv "$schemathesis_venv" \
    && "$schemathesis_venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" \
    || echo "scripts/test.sh: installing schemathesis failed; the OpenAPI test will skip (or fail in CI)" >&2
fi
if [ -x "$schemathesis_venv/bin/schemathesis" ]; then
  KEYGATE_SCHEMATHESIS="$(cd "$(dirname "$schemathesis_venv")" && pwd)/$(basename "$schemathesis_venv")/bin/schemathesis"
  export KEYGATE_SCHEMATHESIS
fi

# The sqlite3 tool for the crash-consistency test (crates/cli/tests/e2e/crash.rs), which checks the
# database file after every kill -9 (PRAGMA integrity_check, foreign keys, keygate's invariants).
if ! command -v sqlite3 >/dev/null 2>&1; then
  apt_install "the crash test" sqlite3
fi

# Redis for the rate-limit cluster tests: a private server (scripts/private-redis.sh) on a free
# port, never the machine's own.
if ! [ -x /usr/bin/redis-server ] && ! command -v redis-server >/dev/null 2>&1; then
  apt_install "the Redis tests" redis-server
fi

# PostgreSQL for the store contract and cluster tests: a private server (scripts/private-postgres.sh),
# never the machine's own.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt_install "the PostgreSQL tests" postgresql
fi
pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/keygate-test-pg.XXXXXX")"
trap 'scripts/private-postgres.sh stop "$pg_dir"' EXIT
if pg_url=$(scripts/private-postgres.sh start "$pg_dir"); then
  export KEYGATE_TEST_POSTGRES_URL="$pg_url"
  echo "scripts/test.sh: private PostgreSQL at $pg_url" >&2
else
  echo "scripts/test.sh: no PostgreSQL; its tests will skip (or fail in CI)" >&2
fi

cargo test --workspace "$@"
