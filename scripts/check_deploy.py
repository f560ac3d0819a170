"""Checks of deploy/ that have no off-the-shelf linter here: the compose files parse and
wire what the README promises, the IAM policy grants read of the export prefix and
nothing else, the kustomization names files that exist, and the Grafana dashboard is
one Grafana can import (every panel queries Prometheus through the dashboard's
datasource variable, no two panels overlap). Exits non-zero, saying
what is wrong, on the first failure."""

import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def fail(message):
    sys.exit(f"deploy check failed: {message}")


def compose(path, services):
    doc = yaml.safe_load((ROOT / path).read_text())
    found = doc.get("services") or {}
    if set(found) != set(services):
        fail(f"{path}: services {sorted(found)}, expected {sorted(services)}")
    for name, service in found.items():
        if not ("image" in service or "build" in service):
            fail(f"{path}: service {name} has neither image nor build")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                local = (ROOT / path).parent / source
                if not local.exists():
                    fail(f"{path}: service {name} mounts {source}, which does not exist")
        for port in service.get("ports", []):
            if not str(port).startswith("127.0.0.1:"):
                fail(f"{path}: service {name} publishes {port} beyond loopback")
    return found


def local_stack():
    services = compose(
        "deploy/docker-compose.yml", ["localstack", "postgres", "cleeng-sync"]
    )
    daemon = services["cleeng-sync"]
    build = daemon["build"]
    if not ((ROOT / "deploy" / build["context"] / build["dockerfile"]).exists()):
        fail("deploy/docker-compose.yml: the daemon's Dockerfile is not where build says")
    env = daemon["environment"]
    for key in ["CLEENG_SYNC_STORE", "CLEENG_SYNC_SERVER_TOKEN", "AWS_ENDPOINT_URL"]:
        if key not in env:
            fail(f"deploy/docker-compose.yml: the daemon has no {key}")
    if "postgres:5432" not in env["CLEENG_SYNC_STORE"]:
        fail("deploy/docker-compose.yml: the daemon's store is not the postgres service")
    if "localstack:4566" not in env["AWS_ENDPOINT_URL"]:
        fail("deploy/docker-compose.yml: the daemon's S3 is not the localstack service")
    for needed in ["localstack", "postgres"]:
        if daemon["depends_on"][needed]["condition"] != "service_healthy":
            fail(f"deploy/docker-compose.yml: the daemon does not wait for {needed}")
    compose("localstack/docker-compose.yml", ["localstack"])


def iam_policy():
    policy = json.loads((ROOT / "deploy/iam/policy.json").read_text())
    grants = {}
    for statement in policy["Statement"]:
        if statement["Effect"] != "Allow":
            continue
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else actions
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        for action in actions:
            grants.setdefault(action, []).append((resources, statement.get("Condition")))
    if set(grants) != {"s3:ListBucket", "s3:GetObject"}:
        fail(f"IAM policy: grants {sorted(grants)}, expected s3:ListBucket and s3:GetObject only")
    for resources, condition in grants["s3:ListBucket"]:
        if any("*" in r or "/" in r.removeprefix("arn:aws:s3:::") for r in resources):
            fail(f"IAM policy: ListBucket on {resources}, expected the bucket itself")
        prefixes = (condition or {}).get("StringLike", {}).get("s3:prefix")
        if not prefixes or any(not p.startswith("cleeng/") for p in prefixes):
            fail("IAM policy: ListBucket is not limited to the export prefix")
    for resources, _ in grants["s3:GetObject"]:
        if any(not r.startswith("arn:aws:s3:::engage-traits/cleeng/") for r in resources):
            fail(f"IAM policy: GetObject on {resources}, beyond the export prefix")


def kustomization():
    doc = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())
    for resource in doc["resources"]:
        if not (ROOT / "deploy/k8s" / resource).exists():
            fail(f"deploy/k8s/kustomization.yaml names {resource}, which does not exist")


def dashboard():
    path = "deploy/grafana/cleeng-sync.json"
    doc = json.loads((ROOT / path).read_text())
    variables = {v["name"] for v in doc["templating"]["list"]}
    if "datasource" not in variables:
        fail(f"{path}: no datasource variable: the dashboard would be tied to one Prometheus")
    taken = set()
    ids = [p["id"] for p in doc["panels"]]
    if len(ids) != len(set(ids)):
        fail(f"{path}: panel ids repeat: {ids}")
    for panel in doc["panels"]:
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        if g["x"] + g["w"] > 24 or cells & taken:
            fail(f"{path}: panel {panel['title']!r} overlaps another or leaves the grid")
        taken |= cells
        if panel["type"] == "row":
            continue
        if panel["datasource"] != {"type": "prometheus", "uid": "${datasource}"}:
            fail(f"{path}: panel {panel['title']!r} does not use the datasource variable")
        if not panel.get("targets") or any(not t.get("expr") for t in panel["targets"]):
            fail(f"{path}: panel {panel['title']!r} has a target without a query")


local_stack()
iam_policy()
kustomization()
dashboard()
