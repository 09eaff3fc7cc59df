#!/usr/bin/env bash
# Runs keygate's whole test suite. Installs what the tests drive for real and a fresh machine may
# lack (curl, Python `requests` for the vendor-example tests, nginx, Chromium, PostgreSQL's
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

# nginx for the auth_request test (crates/cli/tests/e2e/nginx.rs), which runs it as its own
# non-daemon process on a free port. Debian 12's `nginx` package is the full server (with
# http_auth_request); `nginx-light` is only a transitional package there. The package's postinst
# would start a system nginx on port 80: a policy-rc.d that refuses service starts (Docker images
# ship one) is put in place for the install if there is none, so a busy port 80 cannot fail it.
if ! [ -x /usr/sbin/nginx ] && ! command -v nginx >/dev/null 2>&1; then
  echo "scripts/test.sh: installing nginx (apt-get)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  policy_rc=""
  if ! [ -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null && $SUDO chmod 755 "$policy_rc"
  fi
  $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null \
    || echo "scripts/test.sh: installing nginx failed; the nginx test will skip (or fail in CI)" >&2
  if [ -n "$policy_rc" ]; then $SUDO rm -f "$policy_rc"; fi
fi

# Chromium and chromedriver for the web console test (crates/cli/tests/e2e/console.rs), which
# starts chromedriver on a free port and drives a headless Chromium from /usr/bin. Debian's
# packages, not a browser download (the test machines reach package registries only).
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ]; then
  echo "scripts/test.sh: installing chromium and chromium-driver (apt-get)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null \
    || echo "scripts/test.sh: installing chromium failed; the console test will skip (or fail in CI)" >&2
fi

# PostgreSQL for the store contract and cluster tests: a private server (scripts/private-postgres.sh),
# never the machine's own. Debian's package would start a cluster of its own at install: a
# policy-rc.d that refuses service starts is put in place for the install, as for nginx.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "scripts/test.sh: installing postgresql (apt-get)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  policy_rc=""
  if ! [ -e /usr/sbin/policy-rc.d ]; then
    policy_rc=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null && $SUDO chmod 755 "$policy_rc"
  fi
  $SUDO apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null \
    || echo "scripts/test.sh: installing postgresql failed; its tests will skip (or fail in CI)" >&2
  if [ -n "$policy_rc" ]; then $SUDO rm -f "$policy_rc"; fi
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
