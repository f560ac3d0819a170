#!/usr/bin/env bash
# The whole test suite, from a fresh clone: lints, starts LocalStack (creating its venv
# on first use), then runs every test. Idempotent: run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

bash localstack/run.sh start

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --locked --no-fail-fast "$@"
else
  cargo test --all-targets --locked --no-fail-fast "$@"
fi
