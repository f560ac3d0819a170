#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs the Debian tools it needs, lints
# (code, and deploy/ with linters from PyPI in a venv of their own), starts LocalStack
# (creating its venv on first use), then runs every test. Idempotent: run it as often
# as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tools from Debian's packages: promtool (the alert rules), Chromium and ChromeDriver
# (the status page's browser test). First use only.
packages=()
command -v promtool >/dev/null || packages+=(prometheus)
command -v chromium >/dev/null || packages+=(chromium)
command -v chromedriver >/dev/null || packages+=(chromium-driver)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "installing ${packages[*]} (Debian packages, first use)"
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
bash scripts/check-deploy.sh

bash localstack/run.sh start

# The whole suite on the embedded store, then the integration tests again on
# PostgreSQL (DATABASE_URL, else 127.0.0.1:5432 as postgres): each test creates and
# drops a database of its own, and fails, never skips, when the server is missing.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --all-targets --locked --no-fail-fast "$@"
  CLEENG_SYNC_TEST_STORE=postgres cargo nextest run --test it --locked --no-fail-fast "$@"
else
  cargo test --all-targets --locked --no-fail-fast "$@"
  CLEENG_SYNC_TEST_STORE=postgres cargo test --test it --locked --no-fail-fast "$@"
fi
