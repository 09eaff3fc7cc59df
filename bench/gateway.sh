#!/usr/bin/env bash
# keygate as an API gateway against nginx, measured in the same run (see bench/README.md).
#
#   bench/gateway.sh                                  # every scenario, 10 s each
#   DURATION=30s CONNECTIONS=128 bench/gateway.sh
#   SCENARIOS="c d e" bench/gateway.sh                # a subset
#
# Settings (environment): DURATION (10s), CONNECTIONS (64), THREADS (wrk threads, 1), WARMUP (3s,
# before each measured run, not counted), CREDENTIALS (10000 seeded into keygate and into nginx's
# map), SPREAD (keys cycled through by wrk, = CREDENTIALS), TOKENS (Bearer tokens cycled through in
# (b), 1000), SCENARIOS ("a b c d e f g h i"), ROUNDS (1: rounds of every scenario, interleaved; the table
# takes each scenario's round least disturbed by other processes), QUIET_WAIT (120: seconds to wait
# before each scenario for other processes to leave the CPU alone), WORKERS (1: worker processes of
# the nginx front and worker threads of keygate and hyper_floor, the same for all; "auto" = one per
# core), KEEP=1
# (keep the working directory).
#
# Scenarios, one after the other, same wrk settings and the same wrk script (bench/gateway.lua):
#   a  keygate gateway, x-api-key            -> upstream nginx
#   b  keygate gateway, Authorization: Bearer -> upstream nginx
#   c  nginx proxy with a static map of the same keys (hand-made auth) -> upstream nginx
#   d  nginx proxy, no auth (the floor)      -> upstream nginx
#   e  keygate /auth/verify alone vs nginx answering a static 200 (the HTTP floor)
#   f  hyper_floor proxy, no auth            -> upstream nginx  (the floor of keygate's HTTP stack)
#   g  hyper_floor answering a static 200 (compare with e)
#   h  keygate gateway, x-api-key, every key with two rate limits (its own and its account's, never
#      reached), counted on the node                       -> upstream nginx  (compare with a)
#   i  the same, counted through Redis (a private redis-server, scripts/private-redis.sh)
#      (compare with a)
#   j  keygate gateway, x-api-key, every key with two credits balances (its own and its account's,
#      10^15 each: charged per request, leased from the database) -> upstream nginx (compare with a)
#   k  keygate gateway, x-api-key, every key holding 20 permissions, the route requiring a 3-term
#      expression ("videos.create AND (images.read OR admin)") -> upstream nginx (compare with a)
# Raw wrk outputs, configurations and the table go to bench/results/<timestamp>/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-3s}
CREDENTIALS=${CREDENTIALS:-10000}
SPREAD=${SPREAD:-$CREDENTIALS}
TOKENS=${TOKENS:-1000}
SCENARIOS=${SCENARIOS:-a b c d e f g h i j k}
QUIET_WAIT=${QUIET_WAIT:-120}
ROUNDS=${ROUNDS:-1}
WORKERS=${WORKERS:-1}
[[ $WORKERS == auto ]] && WORKERS=$(nproc)
# on: keygate and the front nginx each write an access log, as deployed (keygate its default
# line per request to its log file, nginx `combined` with `buffer=64k flush=1s`); off: neither.
ACCESS_LOG=${ACCESS_LOG:-off}
# Where the access logs are written (keygate's and the front nginx's): by default /dev/shm, in
# memory, so that the disk's writeback of ~5 MB/s of log lines (kernel threads on the same 2
# cores, and a shared, noisy disk on a VM) stays out of the figures; LOG_DIR=DIR for a disk.
LOG_DIR=${LOG_DIR:-}
PROXY_PATH=/v1/items

log() { printf '== %s\n' "$*" >&2; }
die() {
  printf 'gateway.sh: %s\n' "$*" >&2
  exit 1
}
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

[[ $ACCESS_LOG == on || $ACCESS_LOG == off ]] || die "ACCESS_LOG must be on or off, not $ACCESS_LOG"

((SPREAD <= CREDENTIALS)) || die "SPREAD ($SPREAD) is larger than CREDENTIALS ($CREDENTIALS)"
((TOKENS <= CREDENTIALS)) || die "TOKENS ($TOKENS) is larger than CREDENTIALS ($CREDENTIALS)"

# --- tools -------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx)
command -v curl >/dev/null || need+=(curl)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  sudo=()
  [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building keygate and keygate-bench (release)"
(cd "$root" && cargo build --release -q -p keygate -p keygate-bench)
target=${CARGO_TARGET_DIR:-$root/target}
KG=${KEYGATE_BIN:-$target/release/keygate} # KEYGATE_BIN: another keygate build, to compare two versions
SEED=$target/release/seed
FLOOR=$target/release/hyper_floor

serve_help=$("$KG" serve --help)
kg_proxy_flags=()
has_upstream=0
if grep -q -- '--upstream' <<<"$serve_help"; then
  has_upstream=1
  if grep -q -- '--access-log' <<<"$serve_help"; then
    if [[ $ACCESS_LOG == on ]]; then kg_proxy_flags+=(--access-log true); else kg_proxy_flags+=(--access-log false); fi
  fi
elif wants a || wants b; then
  log "WARNING: this keygate has no 'serve --upstream' (gateway mode): scenarios a and b will be skipped"
fi

# --- working directory, processes, clean-up ------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-gateway.XXXXXX")
mkdir -p "$work/tmp"
if [[ -n $LOG_DIR ]]; then
  logs=$(mktemp -d "$LOG_DIR/keygate-gateway-logs.XXXXXX")
elif [[ -d /dev/shm && -w /dev/shm ]]; then
  logs=$(mktemp -d /dev/shm/keygate-gateway-logs.XXXXXX)
else
  logs=$work
fi
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$root/bench/results/$stamp
mkdir -p "$results"
pids=()
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [[ -z ${redis_dir:-} ]] || "$root/scripts/private-redis.sh" stop "$redis_dir" >/dev/null 2>&1 || true
  if [[ ${KEEP:-0} == 1 ]]; then log "kept $work $logs"; else rm -rf "$work" "$logs"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

used_ports=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    [[ $used_ports == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      echo "$p"
      return
    fi
  done
}

wait_http() { # URL LOGFILE PID
  for _ in $(seq 1 200); do
    curl -s -o /dev/null "$1" && return 0
    kill -0 "$3" 2>/dev/null || {
      cat "$2" >&2
      die "process for $1 exited at start-up"
    }
    sleep 0.05
  done
  cat "$2" >&2
  die "$1 did not answer within 10 s"
}

UP=$(free_port) # upstream nginx
NC=$(free_port) # (c) nginx + key map
ND=$(free_port) # (d) nginx, no auth
NS=$(free_port) # (e) nginx static 200
KP=$(free_port) # keygate
HF=$(free_port) # (f) hyper_floor proxy
HS=$(free_port) # (g) hyper_floor static
KL=$(free_port) # (h) keygate, rate limits on the node
KR=$(free_port) # (i) keygate, rate limits through Redis
KC=$(free_port) # (j) keygate, credits
KK=$(free_port) # (k) keygate, permissions

nginx_common() { # NAME WORKERS
  cat <<EOF
worker_processes ${2:-1};
pid $work/$1.pid;
error_log $work/$1.error.log warn;
events { worker_connections 8192; }
EOF
}
nginx_http_common() { # NAME
  # The upstream never logs: it stands for the API behind both.
  if [[ $ACCESS_LOG == on && $1 != upstream ]]; then
    echo "  access_log $logs/$1.access.log combined buffer=64k flush=1s;"
  else
    echo "  access_log off;"
  fi
  cat <<EOF
  client_body_temp_path $work/tmp/$1-body;
  proxy_temp_path $work/tmp/$1-proxy;
  fastcgi_temp_path $work/tmp/$1-fastcgi;
  uwsgi_temp_path $work/tmp/$1-uwsgi;
  scgi_temp_path $work/tmp/$1-scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  default_type application/json;
EOF
}

{
  nginx_common upstream
  echo "http {"
  nginx_http_common upstream
  cat <<EOF
  server {
    listen 127.0.0.1:$UP;
    location / { return 200 '{"ok":true}'; }
  }
}
EOF
} >"$work/upstream.conf"

{
  nginx_common front "$WORKERS"
  echo "http {"
  nginx_http_common front
  cat <<EOF
  map_hash_max_size $((CREDENTIALS * 32 > 262144 ? CREDENTIALS * 32 : 262144));
  map_hash_bucket_size 128;
  map \$http_x_api_key \$kg_ok {
    default 0;
    include $work/keys.map;
  }
  upstream app {
    server 127.0.0.1:$UP;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  # (c) what teams write by hand: a static map of the valid keys.
  server {
    listen 127.0.0.1:$NC;
    location / {
      if (\$kg_ok = 0) { return 401 '{"code":1101,"msg":"Invalid API key"}'; }
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  # (d) the same proxy without authentication: the floor.
  server {
    listen 127.0.0.1:$ND;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
  # (e) a static answer: the HTTP floor.
  server {
    listen 127.0.0.1:$NS;
    location / { return 200 '{"code":1000}'; }
  }
}
EOF
} >"$work/front.conf"

started=
start_nginx() { # NAME PORT; sets $started to nginx's master process id
  "$NGINX" -t -q -p "$work" -c "$work/$1.conf" -e "$work/$1.error.log" ||
    die "nginx refused $work/$1.conf (see $work/$1.error.log)"
  "$NGINX" -p "$work" -c "$work/$1.conf" -e "$work/$1.error.log" -g 'daemon off;' >"$work/$1.out" 2>&1 &
  started=$!
  pids+=("$started")
  wait_http "http://127.0.0.1:$2/" "$work/$1.error.log" "$started"
}

# --- seeding -----------------------------------------------------------------------------------
log "seeding $CREDENTIALS customers into keygate's SQLite store"
db="sqlite://$work/keygate.db"
t0=$(date +%s.%N)
"$SEED" --database-url "$db" --count "$CREDENTIALS" --keys-out "$work/keys.txt" --clients-out "$work/clients.tsv" \
  2>"$work/seed.log" || {
  cat "$work/seed.log" >&2
  die "seeding failed"
}
seed_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
(($(wc -l <"$work/keys.txt") == CREDENTIALS)) || die "seed wrote $(wc -l <"$work/keys.txt") keys, wanted $CREDENTIALS"
head -n "$SPREAD" "$work/keys.txt" >"$work/spread.txt"
awk '{ printf "\"%s\" 1;\n", $0 }' "$work/keys.txt" >"$work/keys.map"
log "seeded in ${seed_s}s"
limited=0
if (wants h || wants i) && ((has_upstream)); then
  # Two limits per key that the load never reaches: its own, and its account's.
  log "seeding $CREDENTIALS rate-limited customers into a second database"
  ldb="sqlite://$work/limited.db"
  "$SEED" --database-url "$ldb" --count "$CREDENTIALS" --keys-out "$work/limited-keys.txt" \
    --clients-out "$work/limited-clients.tsv" --ratelimit requests=1000000000/1s \
    --account-ratelimit account=1000000000/1m 2>"$work/seed-limited.log" || {
    cat "$work/seed-limited.log" >&2
    die "seeding the rate-limited customers failed"
  }
  head -n "$SPREAD" "$work/limited-keys.txt" >"$work/limited-spread.txt"
  limited=1
fi
credited=0
if wants j && ((has_upstream)); then
  log "seeding $CREDENTIALS customers with credits into a third database"
  cdb="sqlite://$work/credited.db"
  "$SEED" --database-url "$cdb" --count "$CREDENTIALS" --keys-out "$work/credited-keys.txt" \
    --clients-out "$work/credited-clients.tsv" --credits 1000000000000000 2>"$work/seed-credited.log" || {
    cat "$work/seed-credited.log" >&2
    die "seeding the customers with credits failed"
  }
  head -n "$SPREAD" "$work/credited-keys.txt" >"$work/credited-spread.txt"
  credited=1
fi

permitted=0
if wants k && ((has_upstream)); then
  log "seeding $CREDENTIALS customers holding 20 permissions into a fourth database"
  pdb="sqlite://$work/permitted.db"
  perms=()
  for p_ in admin.audit billing.read billing.write images.create images.delete images.read images.update \
    jobs.cancel jobs.read jobs.submit keys.read models.list speech.create speech.read usage.read \
    videos.create videos.delete videos.read videos.update webhooks.manage; do
    perms+=(--permission "$p_")
  done
  "$SEED" --database-url "$pdb" --count "$CREDENTIALS" --keys-out "$work/permitted-keys.txt" \
    --clients-out "$work/permitted-clients.tsv" "${perms[@]}" 2>"$work/seed-permitted.log" || {
    cat "$work/seed-permitted.log" >&2
    die "seeding the customers with permissions failed"
  }
  head -n "$SPREAD" "$work/permitted-keys.txt" >"$work/permitted-spread.txt"
  # One more customer, without permissions: the route must refuse it (1009), so the requirement
  # is really decided on every request.
  "$SEED" --database-url "$pdb" --count 1 --keys-out "$work/unpermitted-key.txt" \
    --clients-out "$work/unpermitted-client.tsv" 2>>"$work/seed-permitted.log" || die "seeding a customer without permissions failed"
  cat >"$work/permitted.toml" <<EOF
[[gateway.routes]]
prefix = "/"
upstream = "http://127.0.0.1:$UP"
permissions = "videos.create AND (images.read OR admin)"
EOF
  permitted=1
fi

# --- servers -----------------------------------------------------------------------------------
start_nginx upstream "$UP"
up_pid=$started
start_nginx front "$NS"
front_pid=$started

admin_token="kga_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
kg_args=(serve --listen "127.0.0.1:$KP")
"$KG" serve --help | grep -q -- '--workers' && kg_args+=(--workers "$WORKERS")
((has_upstream)) && kg_args+=(--upstream "http://127.0.0.1:$UP" "${kg_proxy_flags[@]}")
# The admin token goes through the environment rather than --admin-token: flags show in `ps`.
KEYGATE_ADMIN_TOKEN=$admin_token "$KG" --database-url "$db" "${kg_args[@]}" >"$logs/keygate.log" 2>&1 &
kg_pid=$!
pids+=("$kg_pid")
wait_http "http://127.0.0.1:$KP/healthz" "$logs/keygate.log" "$kg_pid"

# (h), (i): the same gateway on the rate-limited customers, counting on the node and in Redis.
start_keygate() { # NAME PORT [--db URL] EXTRA_ARGS...; sets $started
  local name=$1 port=$2 kdb=${ldb:-}
  shift 2
  if [[ ${1:-} == --db ]]; then
    kdb=$2
    shift 2
  fi
  local args=(serve --listen "127.0.0.1:$port" --upstream "http://127.0.0.1:$UP" "${kg_proxy_flags[@]}")
  "$KG" serve --help | grep -q -- '--workers' && args+=(--workers "$WORKERS")
  KEYGATE_ADMIN_TOKEN=$admin_token "$KG" --database-url "$kdb" "${args[@]}" "$@" >"$work/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
  wait_http "http://127.0.0.1:$port/healthz" "$work/$name.log" "$started"
}
if ((limited)) && wants h; then
  start_keygate keygate-limited "$KL"
  kl_pid=$started
fi
redis_dir=
if ((limited)) && wants i; then
  redis_dir=$work/redis
  redis_url=$("$root/scripts/private-redis.sh" start "$redis_dir") || die "starting a private redis-server failed"
  start_keygate keygate-redis "$KR" --redis-url "$redis_url"
  kr_pid=$started
fi
start_floor() { # NAME PORT FLAGS...; sets $started to its process id
  local name=$1 port=$2
  shift 2
  "$FLOOR" --listen "127.0.0.1:$port" --workers "$WORKERS" "$@" >"$work/$name.log" 2>&1 &
  started=$!
  pids+=("$started")
  wait_http "http://127.0.0.1:$port/" "$work/$name.log" "$started"
}
if wants f; then
  start_floor hyper-proxy "$HF" --upstream "http://127.0.0.1:$UP"
  floor_proxy_pid=$started
fi
if wants g; then
  start_floor hyper-static "$HS" --static
  floor_static_pid=$started
fi

if wants b && ((has_upstream)); then
  log "getting $TOKENS tokens from keygate's getToken"
  awk -F'\t' -v n="$TOKENS" -v url="http://127.0.0.1:$KP/api/open/v3/getToken" 'NR <= n {
    if (NR > 1) print "next"
    printf "url = \"%s\"\nheader = \"Content-Type: application/json\"\n", url
    printf "data = \"{\\\"clientId\\\":\\\"%s\\\",\\\"clientSecret\\\":\\\"%s\\\"}\"\n", $1, $2
    print "write-out = \"\\n\""
  }' "$work/clients.tsv" >"$work/gettoken.curl"
  curl -sS -K "$work/gettoken.curl" >"$work/gettoken.out"
  grep -o '"token":"[^"]*"' "$work/gettoken.out" | cut -d'"' -f4 >"$work/tokens.txt" || true
  got=$(wc -l <"$work/tokens.txt")
  ((got == TOKENS)) || die "getToken gave $got tokens for $TOKENS credentials; first answer: $(head -c 300 "$work/gettoken.out")"
fi

# --- measuring ---------------------------------------------------------------------------------
clk=$(getconf CLK_TCK)
proc_ticks() { # PID: user+system ticks of this process and its children (nginx's workers)
  local p total=0 t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
host_ticks() { awk '/^cpu / { print $2+$3+$4+$7+$8+$9, $5+$6 }' /proc/stat; } # busy idle
# CPU seconds of this shell's finished children (wrk): `times` must run in this shell, not a subshell.
child_secs() {
  times >"$work/times"
  awk 'NR == 2 { for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); s += a[1] * 60 + a[2] } print s }' "$work/times"
}
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0
    if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /m$/) n *= 60000; else if (v ~ /s$/) n *= 1000
    printf "%.3f", n }'
}
probe() { # NAME URL HEADER VALUE EXPECT_WITH EXPECT_WITHOUT
  local with without
  with=$(curl -s -o "$work/probe.body" -w '%{http_code}' -H "$3: $4" "$2")
  without=$(curl -s -o /dev/null -w '%{http_code}' "$2")
  [[ $with == "$5" ]] || die "$1: $2 with a valid credential answered $with, expected $5: $(head -c 300 "$work/probe.body")"
  [[ $without == "$6" ]] || die "$1: $2 without a credential answered $without, expected $6"
}

# Waits (up to QUIET_WAIT seconds) until the machine is quiet: less than 15% of a core busy over a
# second while the servers are idle. A build or another benchmark running meanwhile would steal CPU.
busy_1s() {
  local h0 h1
  read -r -a h0 < <(host_ticks)
  sleep 1
  read -r -a h1 < <(host_ticks)
  echo $(((h1[0] - h0[0]) * 100 / clk))
}
wait_quiet() {
  local deadline=$((SECONDS + QUIET_WAIT)) busy said=0
  while busy=$(busy_1s) && ((busy > 15)); do
    if ((SECONDS >= deadline)); then
      log "WARNING: the machine is still busy (${busy}% of a core) after ${QUIET_WAIT}s: measuring anyway"
      return
    fi
    ((said)) || log "waiting for the machine to be quiet (other processes use ${busy}% of a core)"
    said=1
  done
}
idle_busy=$(busy_1s)

# Results per scenario and round ("NAME/ROUND"), then per scenario ("NAME": the chosen round).
declare -A RPS P50 P99 CPU_FRONT CPU_UP CPU_WRK CPU_OTHER OTHER US STATUS
order=()
failed=0

# NAME URL FILE HEADER PREFIX FRONT_PID UPSTREAM_PID(or -)
measure() {
  local name=$1 url=$2 file=$3 header=$4 prefix=$5 fpid=$6 upid=$7 k=$1/$round out=$results/$1.r$round.txt
  ((round > 1)) || order+=("$name")
  wait_quiet
  log "$name (round $round/$ROUNDS): warm-up $WARMUP, then $DURATION (-t$THREADS -c$CONNECTIONS)"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$WARMUP" -s "$root/bench/gateway.lua" "$url" -- "$file" "$header" "$prefix" \
    >"$results/$name.r$round.warmup.txt" 2>&1 || true
  local f0 u0 h0 t0 f1 u1 h1 t1
  f0=$(proc_ticks "$fpid")
  u0=0
  [[ $upid == - ]] || u0=$(proc_ticks "$upid")
  read -r -a h0 < <(host_ticks)
  child_secs >"$work/w0"
  t0=$(date +%s.%N)
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$root/bench/gateway.lua" "$url" \
    -- "$file" "$header" "$prefix" >"$out" 2>&1 || true
  t1=$(date +%s.%N)
  child_secs >"$work/w1"
  read -r -a h1 < <(host_ticks)
  f1=$(proc_ticks "$fpid")
  u1=0
  [[ $upid == - ]] || u1=$(proc_ticks "$upid")
  local wall
  wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')
  # Percentages of one core over the run: the process under test, the upstream, wrk, and everything
  # else on the machine (anything but a few % there means another load disturbed the figures).
  local front up wrk_ other
  front=$(awk -v d=$((f1 - f0)) -v c="$clk" -v w="$wall" 'BEGIN { printf "%.0f", 100 * d / c / w }')
  up=$(awk -v d=$((u1 - u0)) -v c="$clk" -v w="$wall" 'BEGIN { printf "%.0f", 100 * d / c / w }')
  wrk_=$(awk -v a="$(<"$work/w0")" -v b="$(<"$work/w1")" -v w="$wall" 'BEGIN { printf "%.0f", 100 * (b - a) / w }')
  other=$(awk -v b=$((h1[0] - h0[0])) -v c="$clk" -v w="$wall" -v x=$((front + up + wrk_)) \
    'BEGIN { o = 100 * b / c / w - x; printf "%.0f", o < 0 ? 0 : o }')
  CPU_FRONT[$k]=$front%
  CPU_UP[$k]=$up%
  [[ $upid == - ]] && CPU_UP[$k]=-
  CPU_WRK[$k]=$wrk_%
  CPU_OTHER[$k]=$other%
  OTHER[$k]=$other

  RPS[$k]=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  # CPU time of the process under test per request, in microseconds: what a request costs it,
  # whatever share of the machine it got.
  US[$k]=$(awk -v f="$front" -v r="${RPS[$k]:-0}" 'BEGIN { if (r > 0) printf "%.1f", f * 10000 / r; else print "-" }')
  P50[$k]=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  P99[$k]=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  STATUS[$k]=ok
  local bad errors
  bad=$(awk -F': *' '/Non-2xx or 3xx responses/ { print $2 }' "$out")
  errors=$(sed -n 's/.*Socket errors: //p' "$out")
  if [[ -z ${RPS[$k]} ]]; then
    STATUS[$k]="FAILED: no wrk result"
    failed=1
    printf '\n!!! %s: wrk gave no result:\n%s\n\n' "$name" "$(cat "$out")" >&2
  elif [[ -n $bad ]]; then
    STATUS[$k]="FAILED: $bad non-2xx"
    failed=1
    printf '\n!!! %s: %s responses were not 2xx (see %s)\n\n' "$name" "$bad" "$out" >&2
  elif [[ -n $errors ]]; then
    STATUS[$k]="socket errors: $errors"
    printf '\n!!! %s: socket errors: %s (see %s)\n\n' "$name" "$errors" "$out" >&2
  fi
  log "$name: ${RPS[$k]} req/s, p50 ${P50[$k]} ms, p99 ${P99[$k]} ms, other processes ${other}% of a core (${STATUS[$k]})"
}

key1=$(head -n 1 "$work/keys.txt")
if wants a || wants b; then
  if ((has_upstream)); then
    if wants a; then
      probe a "http://127.0.0.1:$KP$PROXY_PATH" x-api-key "$key1" 200 401
      grep -q '"ok":true' "$work/probe.body" || die "a: keygate did not pass the upstream's answer through"
    fi
    if wants b; then
      probe b "http://127.0.0.1:$KP$PROXY_PATH" Authorization "Bearer $(head -n 1 "$work/tokens.txt")" 200 401
    fi
  else
    failed=1
  fi
fi
if wants c; then
  probe c "http://127.0.0.1:$NC$PROXY_PATH" x-api-key "$key1" 200 401
  grep -q '"ok":true' "$work/probe.body" || die "c: nginx did not pass the upstream's answer through"
fi
wants d && probe d "http://127.0.0.1:$ND$PROXY_PATH" x-api-key "$key1" 200 200
if wants e; then
  probe e "http://127.0.0.1:$KP/auth/verify" x-api-key "$key1" 200 401
  probe e "http://127.0.0.1:$NS/" x-api-key "$key1" 200 200
fi
if wants f; then
  probe f "http://127.0.0.1:$HF$PROXY_PATH" x-api-key "$key1" 200 200
  grep -q '"ok":true' "$work/probe.body" || die "f: hyper_floor did not pass the upstream's answer through"
fi
if ((credited)); then
  # shellcheck disable=SC2086 # J_ARGS: extra serve flags for (j), e.g. "--credits-flush 5s"
  start_keygate keygate-credits "$KC" --db "$cdb" ${J_ARGS:-}
  kc_pid=$started
  ckey1=$(head -n 1 "$work/credited-keys.txt")
  probe j "http://127.0.0.1:$KC$PROXY_PATH" x-api-key "$ckey1" 200 401
fi
if ((permitted)); then
  # The route (in the config file) instead of --upstream: the same upstream, with a requirement.
  k_args=(serve --config "$work/permitted.toml" --listen "127.0.0.1:$KK" "${kg_proxy_flags[@]}")
  "$KG" serve --help | grep -q -- '--workers' && k_args+=(--workers "$WORKERS")
  KEYGATE_ADMIN_TOKEN=$admin_token "$KG" --database-url "$pdb" "${k_args[@]}" >"$work/keygate-permissions.log" 2>&1 &
  kk_pid=$!
  pids+=("$kk_pid")
  wait_http "http://127.0.0.1:$KK/healthz" "$work/keygate-permissions.log" "$kk_pid"
  pkey1=$(head -n 1 "$work/permitted-keys.txt")
  probe k "http://127.0.0.1:$KK$PROXY_PATH" x-api-key "$pkey1" 200 401
  nokey=$(head -n 1 "$work/unpermitted-key.txt")
  refused=$(curl -s -o "$work/probe.body" -w '%{http_code}' -H "x-api-key: $nokey" "http://127.0.0.1:$KK$PROXY_PATH")
  [[ $refused == 403 ]] && grep -q '"code":1009' "$work/probe.body" ||
    die "k: a key without the permissions answered $refused, not 403/1009: $(head -c 300 "$work/probe.body")"
fi
lkey1=$( ((limited)) && head -n 1 "$work/limited-keys.txt" || true)
for s_ in h i; do
  wants $s_ && ((limited)) || continue
  port=$KL
  [[ $s_ == i ]] && port=$KR
  probe $s_ "http://127.0.0.1:$port$PROXY_PATH" x-api-key "$lkey1" 200 401
  curl -s -D - -o /dev/null -H "x-api-key: $lkey1" "http://127.0.0.1:$port$PROXY_PATH" | grep -qi '^ratelimit-policy:' ||
    die "$s_: keygate's answer for a limited key has no RateLimit-Policy"
done
if wants i && ((limited)); then
  curl -s "http://127.0.0.1:$KR/readyz" | grep -q '"ratelimits":"shared"' || die "i: keygate does not count through Redis"
fi
if wants g; then
  probe g "http://127.0.0.1:$HS/" x-api-key "$key1" 200 200
  grep -q '"code":1000' "$work/probe.body" || die "g: hyper_floor --static did not answer {\"code\":1000}"
fi

for round in $(seq 1 "$ROUNDS"); do
  if ((has_upstream)); then
    wants a && measure a-keygate-x-api-key "http://127.0.0.1:$KP$PROXY_PATH" "$work/spread.txt" x-api-key "" \
      "$kg_pid" "$up_pid"
    wants b && measure b-keygate-bearer "http://127.0.0.1:$KP$PROXY_PATH" "$work/tokens.txt" Authorization "Bearer " \
      "$kg_pid" "$up_pid"
  fi
  wants c && measure c-nginx-key-map "http://127.0.0.1:$NC$PROXY_PATH" "$work/spread.txt" x-api-key "" \
    "$front_pid" "$up_pid"
  wants d && measure d-nginx-no-auth "http://127.0.0.1:$ND$PROXY_PATH" "$work/spread.txt" x-api-key "" \
    "$front_pid" "$up_pid"
  if wants e; then
    measure e-keygate-verify "http://127.0.0.1:$KP/auth/verify" "$work/spread.txt" x-api-key "" "$kg_pid" -
    measure e-nginx-static "http://127.0.0.1:$NS/" "$work/spread.txt" x-api-key "" "$front_pid" -
  fi
  wants f && measure f-hyper-proxy-floor "http://127.0.0.1:$HF$PROXY_PATH" "$work/spread.txt" x-api-key "" \
    "$floor_proxy_pid" "$up_pid"
  wants g && measure g-hyper-static-floor "http://127.0.0.1:$HS/" "$work/spread.txt" x-api-key "" \
    "$floor_static_pid" -
  if ((limited)); then
    wants h && measure h-keygate-ratelimits "http://127.0.0.1:$KL$PROXY_PATH" "$work/limited-spread.txt" x-api-key "" \
      "$kl_pid" "$up_pid"
    wants i && measure i-keygate-ratelimits-redis "http://127.0.0.1:$KR$PROXY_PATH" "$work/limited-spread.txt" \
      x-api-key "" "$kr_pid" "$up_pid"
  fi
  if ((credited)); then
    measure j-keygate-credits "http://127.0.0.1:$KC$PROXY_PATH" "$work/credited-spread.txt" x-api-key "" \
      "$kc_pid" "$up_pid"
  fi
  if ((permitted)); then
    measure k-keygate-permissions "http://127.0.0.1:$KK$PROXY_PATH" "$work/permitted-spread.txt" x-api-key "" \
      "$kk_pid" "$up_pid"
  fi
done

# Per scenario, the round least disturbed by other processes (interference only ever slows a run
# down); a scenario that failed in any round stays failed.
declare -A CHOSEN
disturbed=0
for n in "${order[@]}"; do
  best=1
  for r in $(seq 2 "$ROUNDS"); do
    ((${OTHER[$n/$r]} < ${OTHER[$n/$best]})) && best=$r
  done
  CHOSEN[$n]=$best
  for v in RPS P50 P99 CPU_FRONT CPU_UP CPU_WRK CPU_OTHER OTHER US STATUS; do
    declare -n arr=$v
    # shellcheck disable=SC2004  # associative, through a name reference
    arr[$n]=${arr[$n/$best]}
    unset -n arr
  done
  for r in $(seq 1 "$ROUNDS"); do
    [[ ${STATUS[$n/$r]} == FAILED* ]] && STATUS[$n]="${STATUS[$n/$r]} (round $r)"
  done
  ((${OTHER[$n]} <= 15)) || disturbed=1
done

# --- report ------------------------------------------------------------------------------------
cp "$work/upstream.conf" "$work/front.conf" "$results/"
# Its last lines only: with ACCESS_LOG=on it holds a line per request.
tail -n 2000 "$logs/keygate.log" >"$results/keygate.log"
ratio() { # A B: A's requests/s over B's
  if [[ -n ${RPS[$1]:-} && -n ${RPS[$2]:-} && ${STATUS[$1]} != FAILED* && ${STATUS[$2]} != FAILED* ]]; then
    awk -v a="${RPS[$1]}" -v b="${RPS[$2]}" 'BEGIN { printf "%.2f", a / b }'
  else
    echo -
  fi
}
p99vs() { # A B: A's p99 over B's
  if [[ -n ${P99[$1]:-} && -n ${P99[$2]:-} ]]; then
    awk -v a="${P99[$1]}" -v b="${P99[$2]}" 'BEGIN { printf "%.2f", a / b }'
  else
    echo -
  fi
}
usvs() { # A B: A's CPU per request over B's
  if [[ ${US[$1]:--} != - && ${US[$2]:--} != - ]]; then
    awk -v a="${US[$1]}" -v b="${US[$2]}" 'BEGIN { printf "%.2f", a / b }'
  else
    echo -
  fi
}
verdict() { # VALUE OP TARGET
  [[ $1 == - ]] && {
    echo "n/a"
    return
  }
  awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN { ok = (op == ">=") ? v >= t : v <= t; print ok ? "meets" : "MISSES" }'
}

{
  echo "keygate gateway benchmark $stamp"
  echo "git $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2); $("$NGINX" -v 2>&1 | cut -d' ' -f3)"
  echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (after ${WARMUP} warm-up), script bench/gateway.lua; $ROUNDS round(s); access logs $ACCESS_LOG$([[ $ACCESS_LOG == on ]] && echo " (in $logs)")"
  echo "credentials: $CREDENTIALS in keygate (SQLite) and in nginx's map, seeded in ${seed_s}s; spread: $SPREAD keys, $TOKENS tokens (b)"
  echo "machine busy before the runs (servers idle): ${idle_busy}% of a core"
  echo "workers: $WORKERS (nginx front worker_processes, keygate and hyper_floor --workers); upstream nginx: worker_processes 1, keepalive"
  echo "CPU columns: % of one core over the measured run: front = the process under test (keygate, nginx or hyper_floor),"
  echo "  upstr = upstream nginx, wrk = the load generator, other = the rest of the machine, with the time a VM lost to other guests (steal) ($(nproc) cores = $(($(nproc) * 100))%);"
  echo "  us/req = CPU microseconds the process under test spent per request"
  echo
  printf '%-22s %11s %8s %8s %6s %6s %6s %6s %8s %5s  %s\n' scenario "requests/s" "p50 ms" "p99 ms" front upstr wrk other \
    "us/req" round status
  for n in "${order[@]}"; do
    printf '%-22s %11s %8s %8s %6s %6s %6s %6s %8s %5s  %s\n' "$n" "${RPS[$n]:--}" "${P50[$n]:--}" "${P99[$n]:--}" \
      "${CPU_FRONT[$n]}" "${CPU_UP[$n]}" "${CPU_WRK[$n]}" "${CPU_OTHER[$n]}" "${US[$n]}" "${CHOSEN[$n]}/$ROUNDS" \
      "${STATUS[$n]}"
  done
  echo
  if ((ROUNDS > 1)); then
    echo "every round (requests/s, p99 ms, other CPU); the table shows the round least disturbed by other processes:"
    for n in "${order[@]}"; do
      printf '  %-22s' "$n"
      for r in $(seq 1 "$ROUNDS"); do
        printf ' | %9s %7s %5s' "${RPS[$n/$r]:--}" "${P99[$n/$r]:--}" "${CPU_OTHER[$n/$r]}"
      done
      echo
    done
    echo
  fi
  if ((disturbed)); then
    echo "WARNING: other processes used CPU during the runs (column 'other'): the figures are disturbed."
    echo
  fi
  ac=$(ratio a-keygate-x-api-key c-nginx-key-map)
  bc=$(ratio b-keygate-bearer c-nginx-key-map)
  ad=$(ratio a-keygate-x-api-key d-nginx-no-auth)
  bd=$(ratio b-keygate-bearer d-nginx-no-auth)
  cd_=$(ratio c-nginx-key-map d-nginx-no-auth)
  e=$(ratio e-keygate-verify e-nginx-static)
  af=$(ratio a-keygate-x-api-key f-hyper-proxy-floor)
  eg=$(ratio e-keygate-verify g-hyper-static-floor)
  fc=$(ratio f-hyper-proxy-floor c-nginx-key-map)
  fd=$(ratio f-hyper-proxy-floor d-nginx-no-auth)
  ge=$(ratio g-hyper-static-floor e-nginx-static)
  a99=$(p99vs a-keygate-x-api-key c-nginx-key-map)
  b99=$(p99vs b-keygate-bearer c-nginx-key-map)
  printf '%-44s %6s   %s\n' "ratio" "value" "target"
  printf '%-44s %6s   %s\n' "a/c  keygate x-api-key / nginx key map" "$ac" ">= 1.0: $(verdict "$ac" '>=' 1.0)"
  printf '%-44s %6s   %s\n' "b/c  keygate Bearer / nginx key map" "$bc" ">= 0.9: $(verdict "$bc" '>=' 0.9)"
  printf '%-44s %6s   %s\n' "p99 a/c" "$a99" "<= 1.0: $(verdict "$a99" '<=' 1.0)"
  printf '%-44s %6s   %s\n' "p99 b/c" "$b99" "<= 1.0: $(verdict "$b99" '<=' 1.0)"
  printf '%-44s %6s   %s\n' "a/d  keygate x-api-key / nginx no auth" "$ad" "(cost of auth + proxy vs the floor)"
  printf '%-44s %6s\n' "b/d  keygate Bearer / nginx no auth" "$bd"
  printf '%-44s %6s\n' "c/d  nginx key map / nginx no auth" "$cd_"
  printf '%-44s %6s   %s\n' "e    keygate /auth/verify / nginx static" "$e" ">= 0.8: $(verdict "$e" '>=' 0.8)"
  ha=$(ratio h-keygate-ratelimits a-keygate-x-api-key)
  ia=$(ratio i-keygate-ratelimits-redis a-keygate-x-api-key)
  printf '%-44s %6s   %s\n' "h/a  two rate limits / none (keygate)" "$ha" ">= 0.95: $(verdict "$ha" '>=' 0.95)"
  printf '%-44s %6s   %s\n' "i/a  two rate limits via Redis / none" "$ia" ">= 0.9: $(verdict "$ia" '>=' 0.9)"
  ja=$(ratio j-keygate-credits a-keygate-x-api-key)
  printf '%-44s %6s   %s\n' "j/a  two credits balances / none (keygate)" "$ja" ">= 0.95: $(verdict "$ja" '>=' 0.95)"
  ka=$(ratio k-keygate-permissions a-keygate-x-api-key)
  printf '%-44s %6s   %s\n' "k/a  20 permissions, 3-term requirement / none" "$ka" ">= 0.95: $(verdict "$ka" '>=' 0.95)"
  printf '%-44s %6s\n' "CPU per request a/c (keygate key / nginx map)" "$(usvs a-keygate-x-api-key c-nginx-key-map)"
  printf '%-44s %6s\n' "CPU per request b/c" "$(usvs b-keygate-bearer c-nginx-key-map)"
  printf '%-44s %6s\n' "CPU per request e (keygate verify / static)" "$(usvs e-keygate-verify e-nginx-static)"
  # The floor of the Rust HTTP stack (hyper, as keygate serves it): informational, no targets.
  printf '%-44s %6s   %s\n' "a/f  keygate x-api-key / hyper proxy floor" "$af" "(keygate's own work on a proxied request)"
  printf '%-44s %6s\n' "e/g  keygate verify / hyper static floor" "$eg"
  printf '%-44s %6s   %s\n' "f/c  hyper proxy floor / nginx key map" "$fc" "(the stack alone against nginx)"
  printf '%-44s %6s\n' "f/d  hyper proxy floor / nginx no auth" "$fd"
  printf '%-44s %6s\n' "g/e  hyper static floor / nginx static" "$ge"
  printf '%-44s %6s\n' "CPU per request a/f (keygate / hyper floor)" "$(usvs a-keygate-x-api-key f-hyper-proxy-floor)"
  printf '%-44s %6s\n' "CPU per request e/g (verify / hyper static)" "$(usvs e-keygate-verify g-hyper-static-floor)"
} | tee "$results/summary.txt"
echo
echo "raw wrk outputs: $results"
exit "$failed"
