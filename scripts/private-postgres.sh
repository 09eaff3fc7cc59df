#!/usr/bin/env bash
# A private PostgreSQL server for keygate's tests: its own data directory and socket directory
# under DIR, its own free port on 127.0.0.1, trust authentication. The machine's own PostgreSQL
# (if any) is never touched: not started, stopped, reconfigured, nor its passwords changed.
#
#   scripts/private-postgres.sh start DIR    initdb + start; prints the URL (postgres://postgres@127.0.0.1:PORT/postgres)
#   scripts/private-postgres.sh kill DIR     immediate shutdown (as a crash), data kept
#   scripts/private-postgres.sh resume DIR   starts it again on the same port
#   scripts/private-postgres.sh stop DIR     stops it and removes DIR
#
# Needs PostgreSQL's server binaries (Debian: package postgresql); scripts/test.sh installs them.
set -euo pipefail
cmd="${1:?usage: private-postgres.sh start|kill|resume|stop DIR}"
dir="${2:?usage: private-postgres.sh start|kill|resume|stop DIR}"

bindir=""
for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do bindir="$d"; done
if [ -z "$bindir" ] && command -v pg_config >/dev/null 2>&1; then bindir="$(pg_config --bindir)"; fi
if [ -z "$bindir" ] || ! [ -x "$bindir/initdb" ]; then
  echo "private-postgres: no PostgreSQL server binaries (initdb) found" >&2
  exit 1
fi

# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_server() {
  local port
  port="$(cat "$dir/port")"
  # fsync off: a throw-away test instance (keygate's own durability is tested by killing keygate).
  as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_pg "$bindir/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    free_port >"$dir/port"
    start_server || { cat "$dir/log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$(cat "$dir/port")/postgres"
    ;;
  kill)
    as_pg "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
    ;;
  resume)
    start_server || { cat "$dir/log" >&2; exit 1; }
    ;;
  stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
      as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    ;;
  *)
    echo "private-postgres: unknown command $cmd" >&2
    exit 2
    ;;
esac
