#!/usr/bin/env bash
# The benchmark harness, from a fresh clone: builds the release binary, starts LocalStack
# (host mode, venv created on first use), generates the exports, times cleeng-sync beside
# the raw-SQL floor and writes bench/RESULTS.md.
#   bench/run.sh [--rows N] [--reps K] [--store sqlite|postgres|both] [--offer-plans P]
# PostgreSQL: DATABASE_URL names a database to connect to as an admin (default
# postgres://postgres@127.0.0.1:5432/postgres); the harness creates and drops its own.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in psql sqlite3 curl /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench: $tool is missing (Debian: apt-get install postgresql-client sqlite3 curl time)" >&2
    exit 1
  }
done

cargo build --release --locked --bin cleeng-sync
bash localstack/run.sh start
exec python3 bench/run.py "$@"
