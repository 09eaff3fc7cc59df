#!/usr/bin/env bash
# Runs keygate's whole test suite. Installs or starts what the tests drive for real and a fresh
# machine may lack (curl, Python `requests` for the vendor-example tests, nginx, Chromium,
# PostgreSQL), then `cargo test`.
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

# PostgreSQL for the store contract and cluster tests. Without it those tests skip loudly,
# or fail under KEYGATE_TEST_REQUIRE_ALL=1.
if pg_url=$(scripts/ensure-postgres.sh); then
  export KEYGATE_TEST_POSTGRES_URL="$pg_url"
else
  echo "scripts/test.sh: no PostgreSQL; its tests will skip (or fail in CI)" >&2
fi

exec cargo test --workspace "$@"
