#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, configured by deny.toml: advisories (RustSec), licenses,
# bans (duplicate versions warn), sources (crates.io only). Installs the pinned cargo-deny with
# `cargo install --locked` if it is missing; exits non-zero when a check fails.
#
# The advisory database is a git repository on GitHub, which cargo-deny fetches. Where it cannot
# be fetched (this project's machines and CI reach the package registries only):
# - KEYGATE_ADVISORY_DB=PATH: a copy of it (a git repository, bare or not) is cloned into
#   cargo-deny's database directory and checked against without fetching;
# - else a copy fetched or cloned there before is used (`cargo deny --offline`);
# - else the advisories are NOT checked: a loud notice, the other checks run, and the script fails
#   only when KEYGATE_DENY_REQUIRE_ADVISORIES=1.
# The date of the database's newest commit is printed; past 90 days it is called stale (a failure
# with KEYGATE_DENY_REQUIRE_ADVISORIES=1). Arguments go to `cargo deny check`, e.g.
# --hide-inclusion-graph (CI: the duplicate-version warnings print ~2,600 lines of graphs).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
DB_URL=https://github.com/RustSec/advisory-db
# Where cargo-deny keeps that database: a name derived from the URL (cargo-deny's url_to_db_path).
DB_DIR="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
MAX_AGE_DAYS=90
require=${KEYGATE_DENY_REQUIRE_ADVISORIES:-0}

if ! cargo deny --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "scripts/deny.sh: installing cargo-deny $CARGO_DENY_VERSION (cargo install --locked)" >&2
  started=$SECONDS
  cargo install cargo-deny --version "=$CARGO_DENY_VERSION" --locked
  echo "scripts/deny.sh: cargo-deny installed in $((SECONDS - started)) s" >&2
fi

skip_banner() {
  cat >&2 <<MSG

!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!!! $1
!!! Set KEYGATE_DENY_REQUIRE_ADVISORIES=1 to make this a failure.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!

MSG
}

# Says how old the local database is; non-zero when it is stale.
db_age() {
  local commit_ts age
  commit_ts=$(git -C "$DB_DIR" log -1 --format=%ct)
  age=$(( ($(date +%s) - commit_ts) / 86400 ))
  echo "scripts/deny.sh: advisory database $(git -C "$DB_DIR" log -1 --format='%h of %cs'), $age days old" >&2
  if [ "$age" -gt "$MAX_AGE_DAYS" ]; then
    skip_banner "STALE: the advisory database is $age days old (over $MAX_AGE_DAYS): recent advisories are missing."
    return 1
  fi
}

started=$SECONDS
status=0
if [ -n "${KEYGATE_ADVISORY_DB:-}" ]; then
  echo "scripts/deny.sh: advisories from the copy in $KEYGATE_ADVISORY_DB (no fetch)" >&2
  rm -rf "$DB_DIR"
  mkdir -p "$(dirname "$DB_DIR")"
  git clone -q "$KEYGATE_ADVISORY_DB" "$DB_DIR"
  db_age || [ "$require" != 1 ] || status=1
  cargo deny --offline check "$@" || status=$?
elif timeout 20 git ls-remote -q --exit-code "$DB_URL" HEAD >/dev/null 2>&1; then
  cargo deny check "$@" || status=$?
elif [ -d "$DB_DIR/crates" ]; then
  echo "scripts/deny.sh: $DB_URL cannot be reached: advisories from the copy fetched before (no fetch)" >&2
  db_age || [ "$require" != 1 ] || status=1
  cargo deny --offline check "$@" || status=$?
else
  skip_banner "SKIP: the advisory database ($DB_URL) cannot be fetched: advisories were NOT checked."
  cargo deny check "$@" licenses bans sources || status=$?
  [ "$require" != 1 ] || status=1
fi
echo "scripts/deny.sh: checked in $((SECONDS - started)) s, exit $status" >&2
exit "$status"
