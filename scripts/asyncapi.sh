#!/usr/bin/env bash
# Regenerate docs/asyncapi/<service>.json, the AsyncAPI 3.0 documents FastStream derives from each
# service's subscribers and message models (`make docs`). tests/unit/test_docs.py fails when a
# committed document differs from what this script writes.
#
#   scripts/asyncapi.sh [OUT_DIR]     default docs/asyncapi
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:-docs/asyncapi}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
# Fixed settings so the documents do not depend on this machine: the compose broker address
# (no credentials), shard 0 (no API call to claim one), throwaway development keys.
export RABBITMQ_URL=amqp://rabbitmq:5672/spec_workflow CODEX_SHARD_INDEX=0 \
    DATABASE_URL=postgresql+asyncpg://postgres@postgres:5432/spec_workflow \
    DEV_SECRETS_KEY_FILE=$TMP/secrets.key LOG_LEVEL=ERROR
FASTSTREAM=.venv/bin/faststream
$FASTSTREAM docs gen --factory services.api.main:asyncapi --out "$OUT/api.json" >/dev/null
for service in preflight codex_runner publisher; do
    $FASTSTREAM docs gen "services.$service.main:app" --out "$OUT/$service.json" >/dev/null
done
# FastStream's channel order follows set iteration, which changes from run to run: sort every
# key so that a regeneration only shows real changes.
.venv/bin/python - "$OUT"/*.json <<'PY'
import json
import sys

for path in sys.argv[1:]:
    with open(path) as f:
        document = json.load(f)
    with open(path, "w") as f:
        json.dump(document, f, indent=2, sort_keys=True)
        f.write("\n")
PY
ls "$OUT"/*.json
