#!/bin/bash
# LocalStack runs this once S3 is ready: a bucket laid out as Cleeng delivers
# (s3://cleeng-exports/cleeng/), holding every sample export mounted at /samples.
set -euo pipefail
bucket=cleeng-exports
awslocal s3api create-bucket --bucket "$bucket" \
  --create-bucket-configuration LocationConstraint=us-west-2 >/dev/null 2>&1 || true
shopt -s nullglob
for export in /samples/*.csv /samples/*.csv.gz; do
  awslocal s3 cp "$export" "s3://$bucket/cleeng/$(basename "$export")"
done
