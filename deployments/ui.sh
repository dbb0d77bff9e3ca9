#!/usr/bin/env bash
# `make ui`: a Prefect server (UI + API on 127.0.0.1, embedded SQLite) and `poolflow serve`.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${POOLFLOW_UI_PORT:-4200}"
api="http://127.0.0.1:${port}/api"
export PREFECT_UI_API_URL="$api" PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
[ -d sample-corpus ] || .venv/bin/poolflow sample sample-corpus

.venv/bin/prefect server start --host 127.0.0.1 --port "$port" &
server=$!
serve=""
stop() { kill $server $serve 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM

for _ in $(seq 120); do
    curl -fs "$api/health" >/dev/null 2>&1 && break
    sleep 0.5
done
PREFECT_API_URL="$api" .venv/bin/poolflow serve --input-dir sample-corpus --output-dir out &
serve=$!
echo "Prefect UI: http://127.0.0.1:${port}   (deployments: wiki-report, tuple-report, demo; Ctrl-C stops)"
wait
