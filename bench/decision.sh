#!/usr/bin/env bash
# Instructions per authentication decision, counted by valgrind's callgrind over the criterion
# benchmark's own loop (crates/auth/benches/hot_path.rs, warm cache): x-api-key, Bearer, and the
# empty `block_on` floor they are compared with. Repeatable where criterion's wall-clock figures
# move by 30% between runs on a shared VM.
#
#   bench/decision.sh                          # this build
#   HOT_PATH_BIN=/path/to/hot_path-xxxx bench/decision.sh   # another build of the benchmark, to compare
#
# Only the iterations are counted (--toggle-collect on criterion's Bencher::iter), divided by the
# calls to Runtime::block_on they made. Valgrind hides SHA-NI from the program, so sha2 runs its
# portable code (about 3,400 instructions per SHA-256 block, where SHA-NI needs about 120): that
# part is printed on its own and left out of the "own" column.
# Needs valgrind and python3 (installed with apt-get if missing).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if ! command -v valgrind >/dev/null; then
  sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq valgrind >/dev/null
fi
BIN=${HOT_PATH_BIN:-}
if [[ -z $BIN ]]; then
  BIN=$(cd "$root" && cargo bench -p keygate-auth --bench hot_path --no-run 2>&1 \
    | sed -n 's/.*Executable benches\/hot_path.rs (\(.*\))/\1/p' | tail -1)
  [[ $BIN == /* ]] || BIN="${CARGO_TARGET_DIR:-$root/target}/${BIN#target/}"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-decision.XXXXXX")
trap 'rm -rf "$work"' EXIT

cat >"$work/percall.py" <<'PY'
import re, sys
# Collected instructions, those in sha2's portable compression, and the calls to block_on.
total = soft = calls = 0
names, fn, cfn = {}, "", ""
for line in open(sys.argv[1]):
    m = re.match(r'^(c?fn)=\((\d+)\)(?: (.*))?$', line.rstrip("\n"))
    if m:
        kind, idx, name = m.groups()
        if name:
            names[idx] = name
        if kind == "fn":
            fn = names.get(idx, "")
        else:
            cfn = names.get(idx, "")
        continue
    if line.startswith("calls="):
        if re.search(r"tokio::runtime::runtime::Runtime::block_on$", cfn):
            calls += int(line.split("=")[1].split()[0])
        continue
    if line.startswith("totals:") or line.startswith("summary:"):
        total = int(line.split()[1])
        continue
    # A cost line of the current function (not an inclusive call cost: those follow calls=).
    parts = line.split()
    if len(parts) == 2 and parts[0][0] in "0123456789+-*" and "sha256::soft::compress" in fn and not cfn:
        soft += int(parts[1])
    if line.startswith(("fl=", "fi=", "fe=")):
        cfn = ""
    if len(parts) == 2 and cfn and parts[0][0] in "0123456789+-*":
        cfn = ""
print(f"{total / calls:.0f} {soft / calls:.0f} {calls}")
PY

printf '%-22s %12s %14s %12s %8s\n' benchmark "instr/call" "of it sha2-soft" "own" iterations
floor=
for b in baseline_block_on x_api_key_warm bearer_warm; do
  valgrind --tool=callgrind --callgrind-out-file="$work/$b.out" \
    "--toggle-collect=criterion::bencher::Bencher<M>::iter*" \
    "$BIN" --bench "authenticate/$b\$" --profile-time 2 >/dev/null 2>&1
  read -r per soft n < <(python3 "$work/percall.py" "$work/$b.out")
  own=$((per - soft))
  [[ -n $floor ]] || floor=$own
  printf '%-22s %12s %14s %12s %8s\n' "$b" "$per" "$soft" "$((own - floor)) above" "$n"
done
