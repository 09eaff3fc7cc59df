#!/usr/bin/env bash
# Runs keygate's whole test suite. Installs or starts what the tests drive for real and a fresh
# machine may lack (curl, Python `requests` for the vendor-example tests, PostgreSQL), then
# `cargo test`.
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

# PostgreSQL for the store contract and cluster tests. Without it those tests skip loudly,
# or fail under KEYGATE_TEST_REQUIRE_ALL=1.
if pg_url=$(scripts/ensure-postgres.sh); then
  export KEYGATE_TEST_POSTGRES_URL="$pg_url"
else
  echo "scripts/test.sh: no PostgreSQL; its tests will skip (or fail in CI)" >&2
fi

exec cargo test --workspace "$@"
