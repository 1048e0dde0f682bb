#!/usr/bin/env bash
# The whole test suite: bootstrap (Docker engine, venv, images), then ruff, mypy, pytest.
# With CI=true, tests that need Docker run and must pass; they never skip.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
# promtool from bootstrap (var/tools) checks the Prometheus rules and dashboard queries.
export PATH="$PWD/var/tools/bin:$PATH"
.venv/bin/ruff check cloner tests benchmarks
.venv/bin/mypy
exec .venv/bin/pytest "$@"
