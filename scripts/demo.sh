#!/usr/bin/env bash
# The main job: the cloner daemon on embedded defaults, demo tenants provisioned
# through the queue (one PostgreSQL tenant per industry, one MySQL, one SQLite), a
# table of state / endpoint / timings, then serving until Ctrl-C.
#
# Without Docker (it cannot be installed or started here), the demo still runs:
# it says why and provisions SQLite tenants, the engine that needs no container.
set -euo pipefail
cd "$(dirname "$0")/.."
CLONER_ALLOW_NO_DOCKER=1 scripts/bootstrap.sh

if [ -e var/docker-unavailable ]; then
  echo "cloner: Docker is unavailable ($(cat var/docker-unavailable))." >&2
  echo "cloner: running on the embedded sqlite engine only; container engines need Docker." >&2
  demo=(demo-technology:sqlite:technology demo-healthcare:sqlite:healthcare
        demo-finance:sqlite:finance demo-none:sqlite:none)
else
  demo=(demo-technology:postgres:technology demo-healthcare:postgres:healthcare
        demo-finance:postgres:finance demo-none:postgres:none
        demo-mysql:mysql:technology demo-sqlite:sqlite:finance)
fi

export CLONER_DATA_DIR="${CLONER_DATA_DIR:-$PWD/var/demo}"
cloner=.venv/bin/cloner
listen="${CLONER_HTTP_LISTEN:-127.0.0.1:8080}"

$cloner serve &
daemon=$!
# Ctrl-C (or SIGTERM) is the normal way out: stop the daemon gracefully, exit 0.
trap 'kill -TERM $daemon 2>/dev/null || true; wait $daemon 2>/dev/null || true; exit 0' INT TERM
trap 'kill -TERM $daemon 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  .venv/bin/python -c "import urllib.request as u; u.urlopen('http://$listen/healthz', timeout=1)" \
    2>/dev/null && break
  kill -0 $daemon 2>/dev/null || { echo "daemon exited" >&2; exit 1; }
  sleep 0.1
done

pids=()
for entry in "${demo[@]}"; do
  IFS=: read -r tenant engine industry <<<"$entry"
  status=$($cloner tenant show "$tenant" --json 2>/dev/null | .venv/bin/python -c \
    'import json,sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || echo absent)
  case "$status" in
    ready) ;;
    absent|failed|purged)
      $cloner tenant create "$tenant" --engine "$engine" --industry "$industry" --wait \
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
