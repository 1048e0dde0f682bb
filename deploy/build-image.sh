#!/usr/bin/env bash
# Build the cloner daemon image without network access inside the build.
#
#   deploy/build-image.sh [--tag TAG] [--base IMAGE] [--offline-base]
#                         [--docker-gid GID] [--uid UID]
#
#   --tag TAG        the image to build (default cloner:local)
#   --base IMAGE     a local image with python3 + venv (default python:3.11-slim)
#   --offline-base   build IMAGE from Debian packages first when it is not present
#                    (mmdebstrap + docker import, about 30 s; root or user namespaces)
#   --docker-gid GID supplementary group of user cloner, to open the Docker socket
#                    (default: the group of /var/run/docker.sock on this host)
#   --uid UID        uid of user cloner (default 10001)
#   PYTHON=...       interpreter that builds the wheels (default .venv/bin/python)
#
# 1. `pip wheel` cloner and its dependencies into deploy/wheelhouse/ on this
#    host (PyPI or pip's cache); 2. `docker build -f deploy/Dockerfile`, which
#    installs from that wheelhouse with --no-index and never pulls BASE.
# Wheels are specific to a Python version, so the base's python3 must have the
# same major.minor as PYTHON; the script checks that before building.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=cloner:local
base=python:3.11-slim
offline_base=0
docker_gid=
uid=10001
python=${PYTHON:-$repo/.venv/bin/python}

die() { echo "build-image: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --base) base=${2:?--base needs a value}; shift 2 ;;
    --offline-base) offline_base=1; shift ;;
    --docker-gid) docker_gid=${2:?--docker-gid needs a value}; shift 2 ;;
    --uid) uid=${2:?--uid needs a value}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done
if [ -z "$docker_gid" ]; then
  docker_gid=$(stat -c %g /var/run/docker.sock 2>/dev/null) \
    || die "no /var/run/docker.sock here to take its group from; pass --docker-gid GID"
fi
case $docker_gid$uid in *[!0-9]*) die "--docker-gid and --uid must be numbers" ;; esac
[ -x "$python" ] || die "$python not found; run scripts/bootstrap.sh or set PYTHON"

if ! docker image inspect "$base" >/dev/null 2>&1; then
  [ "$offline_base" = 1 ] || die "base image $base is not present; pull it, or add --offline-base to build it from Debian packages"
  echo "build-image: building $base offline from Debian packages" >&2
  "$python" - "$base" <<'PY'
import sys
import tempfile
from pathlib import Path

from cloner.runtime.image_builder import ImageBuildError, build_base_image

with tempfile.TemporaryDirectory(prefix="cloner-base-") as work_dir:
    try:
        build_base_image("python", sys.argv[1], work_dir=Path(work_dir),
                         log=lambda line: print(line, file=sys.stderr))
    except ImageBuildError as exc:
        sys.exit(f"build-image: {exc}")
PY
fi

# The wheels must fit the base's interpreter.
version='import sys; print("%d.%d" % sys.version_info[:2])'
base_py=$(docker run --rm --network none --entrypoint python3 "$base" -c "$version") \
  || die "cannot run python3 in $base"
host_py=$("$python" -c "$version")
[ "$base_py" = "$host_py" ] \
  || die "$base has Python $base_py but $python is $host_py; set PYTHON to a python$base_py"

wheelhouse=$repo/deploy/wheelhouse
rm -rf "$wheelhouse"
mkdir -p "$wheelhouse"
echo "build-image: wheels for Python $host_py into deploy/wheelhouse/" >&2
"$python" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$wheelhouse" "$repo"

echo "build-image: docker build $tag on $base (cloner uid $uid, docker gid $docker_gid)" >&2
previous=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
docker build --file "$repo/deploy/Dockerfile" --tag "$tag" \
  --build-arg "BASE=$base" --build-arg "DOCKER_GID=$docker_gid" --build-arg "CLONER_UID=$uid" \
  "$repo"
# The classic builder leaves the install stage untagged, and the tag moved off
# the previous image: remove both so rebuilds do not pile up images. Only images
# this Dockerfile made are touched (its stage label; the old id of this tag, which
# Docker keeps if a container still uses it).
docker image prune --force --filter label=cloner.build-stage=install >/dev/null
current=$(docker image inspect --format '{{.Id}}' "$tag")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  docker rmi "$previous" >/dev/null 2>&1 || true
fi
docker image inspect "$tag" --format "build-image: $tag {{.Id}} {{.Size}} bytes" >&2
