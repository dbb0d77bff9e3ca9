#!/usr/bin/env bash
# `make ui`: a Prefect server (UI + API on 127.0.0.1, embedded SQLite) and `poolflow serve`.
# Ctrl-C (or SIGTERM) stops both: first the serving process, which still needs the API to
# pause its deployments, then the server.
set -uo pipefail
cd "$(dirname "$0")/.."
port="${POOLFLOW_UI_PORT:-4200}"
api="http://127.0.0.1:${port}/api"
export PREFECT_UI_API_URL="$api" PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
[ -d sample-corpus ] || .venv/bin/poolflow sample sample-corpus

# Its own session, so that a terminal's Ctrl-C reaches only this script and the serving process.
setsid .venv/bin/prefect server start --host 127.0.0.1 --port "$port" &
server=$!
serve=""

stop_after() {  # stop_after SECONDS PID: wait for PID, kill it if it outlives SECONDS
    for _ in $(seq "$(( $1 * 10 ))"); do kill -0 "$2" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$2" 2>/dev/null || true
}
stop() {
    trap - EXIT INT TERM
    if [ -n "$serve" ]; then kill -TERM "$serve" 2>/dev/null; stop_after 20 "$serve"; fi
    kill -TERM -- "-$server" 2>/dev/null; stop_after 15 "$server"
    exit 0
}
trap stop EXIT INT TERM

for _ in $(seq 120); do
    curl -fs "$api/health" >/dev/null 2>&1 && break
    sleep 0.5
done
PREFECT_API_URL="$api" .venv/bin/poolflow serve --input-dir sample-corpus --output-dir out &
serve=$!
echo "Prefect UI: http://127.0.0.1:${port}   (deployments: wiki-report, tuple-report, demo; Ctrl-C stops)"
wait "$serve"
