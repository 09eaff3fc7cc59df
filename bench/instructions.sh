#!/usr/bin/env bash
# Instructions per request of keygate's /auth/verify (warm cache, one kept-alive connection, one
# worker, access log off unless ACCESS_LOG=1), counted by valgrind's callgrind: repeatable on a noisy machine, where
# wrk's requests/s move by 10-30% from run to run. Two runs of N1 and N2 requests; the difference
# divided by N2 - N1 leaves start-up and shutdown out.
#
#   bench/instructions.sh                                  # this build
#   KEYGATE_BIN=/path/to/other/keygate bench/instructions.sh   # another build, to compare
#   N1=1000 N2=4000 bench/instructions.sh
#   KEEP=1 bench/instructions.sh                           # keeps the callgrind outputs (callgrind_annotate)
#   LIMITS=1 bench/instructions.sh                         # the key with two rate limits (its own and
#                                                          # its account's), never reached
#   CREDITS=1 bench/instructions.sh                        # the key with two credits balances (its own
#                                                          # and its account's, 10^15 each): the leases
#                                                          # taken from the database are counted too
#   ACCESS_LOG=1 bench/instructions.sh                     # with the access log on (to a file), as deployed
#   PERMISSIONS=1 bench/instructions.sh                    # the key holding 20 permissions (2 wildcards)
#                                                          # and a 10-network allowlist (the client's
#                                                          # last), each request requiring
#                                                          # `videos.create AND (images.read OR admin)`
#
# Needs valgrind and python3 (installed with apt-get if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
N1=${N1:-1000}
N2=${N2:-4000}
if ! command -v valgrind >/dev/null; then
  sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq valgrind >/dev/null
fi
if [[ -z ${KEYGATE_BIN:-} ]]; then
  (cd "$root" && cargo build --release -q -p keygate)
fi
access_log=false
[[ ${ACCESS_LOG:-0} == 1 ]] && access_log=true
KG=${KEYGATE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/keygate}
work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-instructions.XXXXXX")
[[ ${KEEP:-0} == 1 ]] || trap 'rm -rf "$work"' EXIT

cat >"$work/client.py" <<'EOF'
import http.client, sys, time
port, key, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
headers = {"x-api-key": key}
if len(sys.argv) > 4:
    headers["x-keygate-require"] = sys.argv[4]
for _ in range(300):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/healthz"); c.getresponse().read(); break
    except OSError:
        time.sleep(0.1)
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    c.request("GET", "/auth/verify", headers=headers); r = c.getresponse(); r.read()
    assert r.status == 200, r.status
EOF

# Prints the instructions callgrind counted in `keygate serve` over N requests.
count() {
  local n=$1 dir="$work/run-$1" port key account
  mkdir -p "$dir"
  # Admin commands open an existing database only.
  (cd "$dir" && "$KG" migrate >/dev/null 2>&1 || true)
  account=$(cd "$dir" && "$KG" --json account create --email bench@example.com | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  local issued
  local fields=() require=()
  if [[ ${PERMISSIONS:-0} == 1 ]]; then
    local p
    for p in $(seq 0 17); do fields+=(--permission "service$p.action"); done
    fields+=(--permission 'videos.*' --permission images.read)
    for p in $(seq 0 8); do fields+=(--allow-ip "10.$p.0.0/16"); done
    fields+=(--allow-ip 127.0.0.0/8)
    require=('videos.create AND (images.read OR admin)')
  fi
  issued=$(cd "$dir" && "$KG" --json credential create --account "$account" "${fields[@]}")
  key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])' <<<"$issued")
  if [[ ${LIMITS:-0} == 1 ]]; then
    local client
    client=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["clientId"])' <<<"$issued")
    (cd "$dir" && "$KG" credential limits "$client" --ratelimit requests=1000000000/1s >/dev/null &&
      "$KG" account limits "$account" --ratelimit account=1000000000/1m >/dev/null)
  fi
  if [[ ${CREDITS:-0} == 1 ]]; then
    local client
    client=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["clientId"])' <<<"$issued")
    (cd "$dir" && "$KG" credential credits "$client" --remaining 1000000000000000 >/dev/null &&
      "$KG" account credits "$account" --remaining 1000000000000000 >/dev/null)
  fi
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (cd "$dir" && exec valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
    "$KG" serve --listen "127.0.0.1:$port" --workers 1 --access-log "$access_log" >"$dir/serve.log" 2>&1) &
  local pid=$!
  python3 "$work/client.py" "$port" "$key" "$n" "${require[@]}"
  kill -TERM "$pid"
  wait "$pid" || true
  # Start-up work that depends on timing (quanta's clock calibration) is left out.
  callgrind_annotate --threshold=100 "$dir/cg.out" 2>/dev/null | python3 -c '
import re, sys
total = 0
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.*)$", line)
    if m and "PROGRAM TOTALS" not in m.group(2) and "quanta::" not in m.group(2):
        total += int(m.group(1).replace(",", ""))
print(total)'
}

a=$(count "$N1")
b=$(count "$N2")
echo "keygate: $KG"
[[ ${KEEP:-0} == 1 ]] && echo "callgrind outputs: $work/run-*/cg.out"
echo "instructions per /auth/verify request: $(((b - a) / (N2 - N1)))  (runs of $N1 and $N2 requests$([[ ${LIMITS:-0} == 1 ]] && echo ', two rate limits')$([[ ${CREDITS:-0} == 1 ]] && echo ', two credits balances')$([[ ${PERMISSIONS:-0} == 1 ]] && echo ', 20 permissions, a 3-term requirement, a 10-network allowlist')$([[ $access_log == true ]] && echo ', access log on'))"
