#!/usr/bin/env bash
# Runs Portico on conf/portico.yaml with the demo upstreams it points at (ports 9001-9003).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/debug
"$bin/portico-demo-upstream" web=127.0.0.1:9001 api-a=127.0.0.1:9002 api-b=127.0.0.1:9003 &
demo=$!
trap 'kill $demo 2>/dev/null || true' EXIT INT TERM
echo "Portico on http://127.0.0.1:8080 (try /api/hello and /), admin on http://127.0.0.1:9901" >&2
"$bin/portico" run -c "${1:-conf/portico.yaml}"
