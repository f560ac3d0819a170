#!/usr/bin/env bash
# The benchmark harness, from a fresh clone: builds the release binary, starts LocalStack
# (host mode, venv created on first use), installs Sling (the peer) in bench/.venv, generates
# the exports, times cleeng-sync beside the raw-SQL floor and Sling, and writes
# bench/RESULTS.md. Disk: the exports (about 100 MB a million rows, two of them, in
# bench/data), the stores and the floor's copy (about 0.6 GB a million rows on each), and
# the spill files of a large run (TMPDIR, about 0.2 GB a million). 10M rows need some
# 15 GB free and about an hour on 2 cores.
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

# The peer on PostgreSQL: Sling, whose PyPI wheel ships its binary, in the harness's venv.
SLING_VERSION=1.4.11
venv=bench/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" show sling-linux-amd64 2>/dev/null | grep -qx "Version: $SLING_VERSION" ||
  "$venv/bin/pip" install -q "sling-linux-amd64==$SLING_VERSION"
SLING_BIN=$("$venv/bin/python" -c 'import pathlib, sling_linux_amd64 as s; print(pathlib.Path(s.__file__).parent / "bin" / "sling-linux-amd64")')
chmod +x "$SLING_BIN"
export SLING_BIN
exec python3 bench/run.py "$@"
