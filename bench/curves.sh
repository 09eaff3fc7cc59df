#!/usr/bin/env bash
# Cost curves (issue 15 goal 6): how the cold miss, the warm decision and memory per cached
# credential grow with the number of credentials. Runs pg_scale once per size (each caches all of
# its credentials unless FILL=false), keeps the RESULT lines in bench/curves.txt and draws
# bench/curves.svg from them (bench/plot_curves.py, no dependencies).
#
#   SIZES="10000 100000 1000000 10000000:sample" bench/curves.sh
# A size with ":sample" is measured on a 20k sample without caching all (no memory figure): at
# ~3,000 cold loads/s here, filling 10M takes most of an hour.
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/keygate_bench (the default)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-"10000 100000 1000000"}
FILL=${FILL:-true}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/keygate_bench}
OUT=bench/curves.txt
cargo build --release -q -p keygate-bench --bin pg_scale
: >"$OUT.new"
for size in $SIZES; do
  n=${size%%:*}
  fill=$FILL
  [[ $size == *:sample ]] && fill=false
  echo "== $n credentials (fill $fill)" >&2
  # A run seeds up to N if the database has fewer, and uses the first N if it has more.
  ./target/release/pg_scale --database-url "$DATABASE_URL" --credentials "$n" --fill "$fill" | tee -a /dev/stderr |
    grep '^RESULT' >>"$OUT.new"
done
mv "$OUT.new" "$OUT"
python3 bench/plot_curves.py "$OUT" bench/curves.svg
echo "wrote $OUT and bench/curves.svg" >&2
