#!/usr/bin/env bash
# LocalStack S3 in host mode (no Docker engine needed), from a venv created on first use.
# Usage: localstack/run.sh start|stop|status
# Idempotent: `start` returns at once when LocalStack already answers on 127.0.0.1:4566.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cleeng-sync
# Outside the work tree, so that every clone on this machine (CI included) shares it.
venv=${LOCALSTACK_VENV:-$cache/localstack-venv}
state=${LOCALSTACK_STATE:-$cache/localstack-state}
endpoint=http://127.0.0.1:4566
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3

healthy() {
  curl -fsS --max-time 2 "$endpoint/_localstack/health" 2>/dev/null | grep -q '"s3": *"\(available\|running\)"'
}

ensure_venv() {
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
    return
  fi
  echo "localstack: creating venv in $venv (first use, takes a minute)" >&2
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'localstack-core[runtime]==4.12.0' 'cryptography>=41.0.5,<44' 'pyopenssl==24.2.1' \
    service_identity 'joserfc<1.1' 'cbor2<5.7'
}

start() {
  if healthy; then echo "localstack: already running on $endpoint"; return; fi
  ensure_venv
  mkdir -p "$state"
  # A stale plugin cache makes LocalStack find no service providers.
  rm -rf "$HOME/.cache/plux"
  GATEWAY_LISTEN=127.0.0.1:4566 SERVICES=s3 EAGER_SERVICE_LOADING=1 \
    LOCALSTACK_VOLUME_DIR="$state/volume" FILESYSTEM_ROOT="$state/fs" \
    nohup "$venv/bin/python" -m localstack.runtime.main >"$state/localstack.log" 2>&1 &
  echo $! >"$state/pid"
  for _ in $(seq 1 120); do
    if healthy; then echo "localstack: running on $endpoint (log: $state/localstack.log)"; return; fi
    if ! kill -0 "$(cat "$state/pid")" 2>/dev/null; then
      echo "localstack: exited during start-up; last lines of $state/localstack.log:" >&2
      tail -n 30 "$state/localstack.log" >&2
      exit 1
    fi
    sleep 1
  done
  echo "localstack: not healthy after 120 s; see $state/localstack.log" >&2
  exit 1
}

stop() {
  if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
    kill "$(cat "$state/pid")"
    for _ in $(seq 1 20); do kill -0 "$(cat "$state/pid")" 2>/dev/null || break; sleep 0.5; done
    echo "localstack: stopped"
  else
    echo "localstack: not running (from this script)"
  fi
  rm -f "$state/pid"
}

status() {
  if healthy; then echo "localstack: running on $endpoint"; else echo "localstack: not running"; exit 1; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
