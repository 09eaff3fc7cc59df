#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests: uses a running one,
# starts an installed but stopped cluster, or installs Debian's package and starts it.
# Prints the URL the tests should use (KEYGATE_TEST_POSTGRES_URL) on stdout.
set -euo pipefail
url="${KEYGATE_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
ready() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1; }
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "ensure-postgres: installing postgresql (apt-get)" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
if ! ready; then
  for v in $(ls /etc/postgresql 2>/dev/null); do
    echo "ensure-postgres: starting cluster $v/main" >&2
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main start >&2 || true
  done
  for _ in $(seq 1 30); do ready && break; sleep 1; done
fi
if ! ready; then
  echo "ensure-postgres: PostgreSQL is not answering on 127.0.0.1:5432" >&2
  exit 1
fi
# A fresh Debian cluster asks for a password over TCP: give the postgres role the one in $url.
if ! psql "$url" -Atc 'select 1' >/dev/null 2>&1; then
  $SUDO -u postgres psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >&2 2>/dev/null \
    || su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
fi
psql "$url" -Atc 'select 1' >/dev/null
echo "$url"
