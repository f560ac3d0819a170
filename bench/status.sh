#!/usr/bin/env bash
# The status page's benchmark: builds the release binary, then times GET / and a run's
# page with 10,000 runs in the ledger, on SQLite and PostgreSQL, beside the page's own
# statements sent straight to the store, and writes bench/RESULTS-status.md.
#   bench/status.sh [--runs N] [--requests K] [--store sqlite|postgres|both]
# PostgreSQL: DATABASE_URL names a database to connect to as an admin (default
# postgres://postgres@127.0.0.1:5432/postgres); the bench creates and drops its own.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v psql >/dev/null 2>&1 || {
  echo "bench: psql is missing (Debian: apt-get install postgresql-client)" >&2
  exit 1
}
cargo build --release --locked --bin cleeng-sync
exec python3 bench/status.py "$@"
