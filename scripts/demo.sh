#!/usr/bin/env bash
# The main job: the cloner daemon on embedded defaults, one demo tenant per industry
# provisioned through the queue, a table of state / endpoint / timings, then serving
# until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh

export CLONER_DATA_DIR="${CLONER_DATA_DIR:-$PWD/var/demo}"
cloner=.venv/bin/cloner
listen="${CLONER_HTTP_LISTEN:-127.0.0.1:8080}"

$cloner serve &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null' INT TERM EXIT

for _ in $(seq 1 100); do
  .venv/bin/python -c "import urllib.request as u; u.urlopen('http://$listen/healthz', timeout=1)" \
    2>/dev/null && break
  kill -0 $daemon 2>/dev/null || { echo "daemon exited" >&2; exit 1; }
  sleep 0.1
done

pids=()
for industry in technology healthcare finance none; do
  tenant="demo-$industry"
  status=$($cloner tenant show "$tenant" --json 2>/dev/null | .venv/bin/python -c \
    'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || echo absent)
  case "$status" in
    ready) ;;
    absent|failed|purged)
      $cloner tenant create "$tenant" --engine postgres --industry "$industry" --wait \
        >/dev/null &
      pids+=($!) ;;
    *) echo "$tenant is $status; leaving it alone" >&2 ;;
  esac
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

echo
$cloner tenant list
echo
echo "cloner is serving: http://$listen/metrics  (data in $CLONER_DATA_DIR)"
echo "try: $cloner tenant show demo-healthcare --reveal    Ctrl-C stops the daemon."
[ "$failed" -eq 0 ] || echo "some demo tenants failed; see 'cloner tenant show'" >&2
wait $daemon
