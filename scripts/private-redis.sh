#!/usr/bin/env bash
# A private Redis server for keygate's tests: its own directory DIR (pid file, log, working
# directory), its own free port on 127.0.0.1, no persistence (no RDB snapshots, no AOF). The
# machine's own Redis (if any, e.g. on 127.0.0.1:6379) is never touched: port 6379 is never used,
# nothing is sent to it, and only the process named in DIR/redis.pid is ever signalled.
#
#   scripts/private-redis.sh start DIR    starts it; prints the URL (redis://127.0.0.1:PORT)
#   scripts/private-redis.sh kill DIR     SIGKILL (as a crash); waits until the port is closed
#   scripts/private-redis.sh resume DIR   starts it again on the same port
#   scripts/private-redis.sh stop DIR     stops it (if running) and removes DIR
#
# Needs redis-server (Debian: package redis-server); not redis-cli: readiness is checked with a
# PING over bash's /dev/tcp.
set -euo pipefail
cmd="${1:?usage: private-redis.sh start|kill|resume|stop DIR}"
dir="${2:?usage: private-redis.sh start|kill|resume|stop DIR}"

server="$(command -v redis-server 2>/dev/null || true)"
if [ -z "$server" ] && [ -x /usr/bin/redis-server ]; then server=/usr/bin/redis-server; fi
if [ -z "$server" ] || ! [ -x "$server" ]; then
  echo "private-redis: no redis-server found (on PATH or /usr/bin/redis-server)" >&2
  exit 1
fi

# The machine's own Redis lives on the default port: never ours, whatever else happens.
readonly SYSTEM_PORT=6379

free_port() {
  local port
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    if [ "$port" != "$SYSTEM_PORT" ]; then echo "$port"; return 0; fi
  done
  echo "private-redis: no free port" >&2
  return 1
}

port_of() {
  local port
  port="$(cat "$dir/port" 2>/dev/null || true)"
  case "$port" in
    '' | *[!0-9]*) echo "private-redis: no port recorded in $dir/port" >&2; return 1 ;;
  esac
  if [ "$port" = "$SYSTEM_PORT" ]; then
    echo "private-redis: refusing port $SYSTEM_PORT (the machine's own Redis)" >&2
    return 1
  fi
  echo "$port"
}

# The pid in DIR/redis.pid, if that process is alive and is our redis-server (its process title
# is "redis-server 127.0.0.1:PORT"), else nothing. A stale pid file (after kill) or a reused pid
# never matches.
our_pid() {
  local port="$1" pid args
  [ -n "$port" ] && [ "$port" != "$SYSTEM_PORT" ] || return 1
  pid="$(cat "$dir/redis.pid" 2>/dev/null || true)"
  case "$pid" in
    '' | *[!0-9]*) return 0 ;;
  esac
  if [ -r "/proc/$pid/cmdline" ]; then
    args="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  else
    args="$(ps -p "$pid" -o args= 2>/dev/null || true)"
  fi
  case "$args " in
    *redis*"127.0.0.1:$port "*) echo "$pid" ;;
  esac
}

# True while the process runs (a zombie, dead but not yet reaped by init, counts as gone).
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  if [ -r "/proc/$1/stat" ]; then
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null || true)"
  else
    state="$(ps -o stat= -p "$1" 2>/dev/null || true)"
  fi
  case "$state" in Z*) return 1 ;; esac
}

# True when something answers PING with +PONG on the port (bash /dev/tcp, no redis-cli).
pong() (
  line=""
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf 'PING\r\n' >&3 || exit 1
  IFS= read -r -t 2 line <&3 || true
  [ "${line%$'\r'}" = "+PONG" ]
)

# True when nothing accepts connections on the port.
port_closed() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_server() {
  local port logged
  port="$(port_of)" || return 1
  rm -f "$dir/redis.pid"
  logged="$(stat -c %s "$dir/log" 2>/dev/null || echo 0)"
  "$server" --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --appendonly no \
    --pidfile "$dir/redis.pid" --logfile "$dir/log" --daemonize yes >>"$dir/log" 2>&1 </dev/null
  # Up to ~10 s: PONG from the port and the pid file naming our live process (so the answer is
  # ours, not another server's that took the port).
  for _ in $(seq 100); do
    if [ -n "$(our_pid "$port" || true)" ] && pong "$port" 2>/dev/null; then return 0; fi
    # This run's log lines only (the log is appended to across start, resume, resume, ...).
    if tail -c "+$((logged + 1))" "$dir/log" 2>/dev/null | grep -q 'Failed listening on port'; then break; fi
    sleep 0.1
  done
  echo "private-redis: redis-server did not become ready on 127.0.0.1:$port" >&2
  return 1
}

# SIGKILL (or, with TERM, a clean shutdown) of our server; waits until it is gone and the port closed.
signal_and_wait() {
  local sig="$1" port pid
  port="$(port_of)" || return 1
  pid="$(our_pid "$port")" || return 1
  if [ -n "$pid" ]; then
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      if ! alive "$pid" && port_closed "$port"; then break; fi
      sleep 0.1
    done
    if alive "$pid" && [ "$sig" != KILL ]; then
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    fi
    if alive "$pid"; then
      echo "private-redis: redis-server (pid $pid) did not exit" >&2
      return 1
    fi
  fi
  for _ in $(seq 100); do port_closed "$port" && break; sleep 0.1; done
  rm -f "$dir/redis.pid"
  port_closed "$port" || { echo "private-redis: port $port still open" >&2; return 1; }
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    free_port >"$dir/port"
    start_server || { cat "$dir/log" >&2; exit 1; }
    echo "redis://127.0.0.1:$(cat "$dir/port")"
    ;;
  kill)
    dir="$(cd "$dir" && pwd)"
    signal_and_wait KILL
    ;;
  resume)
    dir="$(cd "$dir" && pwd)"
    start_server || { cat "$dir/log" >&2; exit 1; }
    ;;
  stop)
    if [ -d "$dir" ]; then
      dir="$(cd "$dir" && pwd)"
      if [ -f "$dir/port" ]; then signal_and_wait TERM >/dev/null 2>&1 || true; fi
      rm -rf "$dir"
    fi
    ;;
  *)
    echo "private-redis: unknown command $cmd" >&2
    exit 2
    ;;
esac
