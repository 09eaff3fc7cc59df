#!/usr/bin/env bash
# Fuzzes everything in keygate that parses untrusted bytes (the cargo-fuzz project in fuzz/: API
# keys, tokens, credential headers, the real authenticator on an in-memory SQLite store, rate
# limits, networks and X-Forwarded-For, the configuration file, getToken's and the admin API's
# bodies, the console's cookies and forms), each target for SECONDS_PER_TARGET seconds of libFuzzer
# (default 20).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (no TARGET: every target)
#
# Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz if it is missing. Each target
# starts from its committed seeds (fuzz/corpus/TARGET), copied to a temporary directory first:
# inputs libFuzzer finds are written there, never into the repository. Prints, per target, the
# executions run; fails if any target crashed (a panic, a failed invariant, a sanitizer report,
# a timeout or running out of memory), after printing the failing inputs, kept under the temporary
# directory. Reproduce one with `cargo +nightly fuzz run TARGET PATH` from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
[ $# -gt 0 ] && shift
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing the nightly toolchain (rustup)" >&2
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "scripts/fuzz.sh: installing cargo-fuzz" >&2
  cargo +nightly install cargo-fuzz --locked
fi

started=$(date +%s)
echo "== cargo +nightly fuzz build"
cargo +nightly fuzz build
built=$(date +%s)

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-fuzz.XXXXXX")
failed=()
for target in "${targets[@]}"; do
  corpus="$work/corpus/$target"
  artifacts="$work/artifacts/$target/"
  log="$work/logs/$target.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  if [ -d "fuzz/corpus/$target" ]; then
    cp -R "fuzz/corpus/$target/." "$corpus/"
  fi
  echo "== $target (${seconds}s)"
  status=0
  cargo +nightly fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
    -artifact_prefix="$artifacts" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
  if [ -z "$execs" ]; then
    execs=$(sed -n 's/^#\([0-9]*\)[[:space:]]*DONE.*/\1/p' "$log" | tail -n 1)
  fi
  coverage=$(sed -n 's/^#[0-9]*[[:space:]]*DONE[[:space:]]*cov: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
  corpus_size=$(find "$corpus" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    echo "$target: ${execs:-?} executions in ${seconds}s (coverage ${coverage:-?}, corpus $corpus_size)"
  else
    failed+=("$target")
    echo "$target: FAILED (exit $status) after ${execs:-?} executions; from its log ($log):"
    grep -E -A3 "panicked at|==[0-9]+==ERROR|^SUMMARY|^MS: |Test unit written" "$log" | head -n 40 | sed 's/^/    /' || true
    find "$artifacts" -type f | sed 's/^/    failing input: /'
  fi
done

finished=$(date +%s)
echo "== fuzzing took $((finished - started))s (build $((built - started))s)"
if [ ${#failed[@]} -gt 0 ]; then
  echo "scripts/fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}; inputs and logs are under $work" >&2
  exit 1
fi
rm -rf "$work"
