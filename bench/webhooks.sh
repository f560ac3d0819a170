#!/usr/bin/env bash
# The webhook benchmark on both stores: deliveries a second the listener accepts and
# commits (p50/p99 latency) beside the floor (the same inserts straight into the store),
# and the Cleeng lookups the inbox worker makes for N events of M subscribers
# (examples/webhook-bench.rs). Writes bench/RESULTS-webhooks.md.
#   bench/webhooks.sh [--events N] [--subscribers M] [--concurrency C]
# PostgreSQL: DATABASE_URL names a database to connect to as an admin (default
# postgres://postgres@127.0.0.1:5432/postgres); the benchmark creates and drops its own.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin cleeng-sync --example webhook-bench
admin=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
database=cleeng_sync_bench_webhooks
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; psql "$admin" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1 || true' EXIT

rows=()
rows+=("$(target/release/examples/webhook-bench --binary target/release/cleeng-sync \
  --store "sqlite://$scratch/hooks.db" "$@")")
psql "$admin" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1
psql "$admin" -qc "CREATE DATABASE $database"
rows+=("$(target/release/examples/webhook-bench --binary target/release/cleeng-sync \
  --store "${admin%/*}/$database" "$@")")

{
  echo "# Webhooks: deliveries accepted and committed, beside the floor"
  echo
  echo "\`bench/webhooks.sh $*\` at $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d),"
  echo "$(nproc) cores. Each delivery is signed (HMAC-SHA256), verified, parsed and committed"
  echo "to the inbox before its 200; the floor is the same insert sent straight to the store"
  echo "through the library (no HTTP, no signature). The worker refreshes meanwhile, against"
  echo "the Cleeng stand-in (200 requests a second allowed)."
  echo
  echo "| store | what | events/s | p50 ms | p99 ms | notes |"
  echo "| --- | --- | ---: | ---: | ---: | --- |"
  printf '%s\n' "${rows[@]}"
} > bench/RESULTS-webhooks.md
cat bench/RESULTS-webhooks.md
