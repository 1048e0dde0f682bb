"""Offline build of engine images: Debian packages in, Docker image out.

No container registry is needed: ``mmdebstrap`` assembles a Debian bookworm
root filesystem straight from a Debian package mirror into a tarball, and
``docker import`` (through the Docker SDK) turns that tarball into an image,
with the image configuration (entrypoint, env, labels...) passed as
``--change`` lines. The resulting image honours the environment contract of
the matching official image, so the rest of cloner does not care where an
image came from.

Each engine is one :class:`EngineRecipe`. Images that other images are
built ``FROM`` (the daemon's own image on a host that cannot pull
``python:3.11-slim``) are a :class:`BaseRecipe`: packages only, no account,
no entrypoint. The work is blocking (minutes of subprocess and HTTP); async
callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import collections
import io
import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import docker
import docker.errors
from docker.utils import parse_repository_tag

from cloner.errors import ImageError

__all__ = [
    "BASE_RECIPES",
    "RECIPES",
    "BaseRecipe",
    "EngineRecipe",
    "ImageBuildError",
    "OwnedDir",
    "build_base_image",
    "build_offline_image",
]

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
IMAGES_DIR = Path(__file__).resolve().parent / "images"
ENTRYPOINT_PATH = "/usr/local/bin/docker-entrypoint.sh"

#: A stalled mirror must not hang a build forever; a normal build takes
#: well under five minutes.
BUILD_TIMEOUT_S = 30 * 60
#: Generous: the SDK streams the tarball (a few hundred MB) to the engine.
DOCKER_TIMEOUT_S = 15 * 60
#: Lines of subprocess output kept for the error message.
_TAIL_LINES = 6
_TAIL_CHARS = 600
#: How long a timed-out build may take to clean up after SIGTERM.
_TERM_GRACE_S = 60

#: Left out of every image. They are never read by a database server, and
#: dpkg's path filters keep them off disk instead of deleting them later.
#: The filters stay in the image (/etc/dpkg/dpkg.cfg.d), so a later
#: ``apt-get install`` in a derived image behaves the same.
COMMON_PATH_EXCLUDES: tuple[str, ...] = (
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
    # Locale sources for localedef: useless on a read-only root filesystem,
    # where no locale can be generated at run time anyway.
    "/usr/share/i18n/*",
)


class ImageBuildError(ImageError):
    """An offline image build failed.

    The message is one line: the failing step or command and the tail of its
    output, enough to act on without digging through logs.
    """


@dataclass(frozen=True, slots=True)
class OwnedDir:
    """A directory created in the image with a given owner and mode."""

    path: str
    uid: int
    gid: int
    mode: int


@dataclass(frozen=True, slots=True)
class EngineRecipe:
    """Everything engine-specific about an offline image build.

    Attributes:
        engine: cloner's engine name; also the ``cloner.image.engine`` label.
        packages: Debian packages to install (dependencies follow).
        user: name of the account the server runs as.
        uid: its uid, identical to the official image's so volumes move
            between official and offline images without a chown.
        gid: its gid, likewise.
        home: the account's home directory.
        entrypoint: file name under ``images/<engine>/``; installed as
            ``/usr/local/bin/docker-entrypoint.sh``.
        dirs: directories the entrypoint relies on, with owner and mode.
        preseed_files: ``(path, content)`` written before the packages
            install, to steer their maintainer scripts.
        path_excludes: engine-specific dpkg path filters, on top of
            :data:`COMMON_PATH_EXCLUDES`.
        smoke_test: command run inside the finished root filesystem; a
            non-zero exit fails the build (catches a missing library).
        changes: Dockerfile instructions applied by ``docker import``
            (``ENTRYPOINT`` and the ``cloner.image.*`` labels are added by
            the builder).
    """

    engine: str
    packages: tuple[str, ...]
    user: str
    uid: int
    gid: int
    home: str
    entrypoint: str
    dirs: tuple[OwnedDir, ...]
    preseed_files: tuple[tuple[str, str], ...]
    path_excludes: tuple[str, ...]
    smoke_test: tuple[str, ...]
    changes: tuple[str, ...]


POSTGRES_RECIPE = EngineRecipe(
    engine="postgres",
    # libnss-wrapper lets the entrypoint run initdb under a uid that has no
    # passwd entry (e.g. `--user 1234`), with /etc read-only. xz-utils and
    # zstd: the official contract runs *.sql.xz and *.sql.zst init scripts.
    packages=("postgresql-15", "libnss-wrapper", "xz-utils", "zstd"),
    user="postgres",
    uid=999,
    gid=999,
    home="/var/lib/postgresql",
    entrypoint="entrypoint.sh",
    dirs=(
        OwnedDir("/var/lib/postgresql", 999, 999, 0o755),
        OwnedDir("/var/lib/postgresql/data", 999, 999, 0o700),
        # Usually a tmpfs at run time, and Docker gives a tmpfs the mode of
        # the directory it covers but root ownership: only a world-writable
        # (sticky, setgid) mode lets uid 999 create its socket there.
        OwnedDir("/var/run/postgresql", 999, 999, 0o3777),
    ),
    preseed_files=(
        # Without this the package's postinst runs initdb for a "15/main"
        # cluster (a 16 MB WAL segment and several seconds) that we would
        # only delete again: clusters are made by the entrypoint.
        (
            "/etc/postgresql-common/createcluster.d/cloner.conf",
            "create_main_cluster = false\n",
        ),
    ),
    path_excludes=(
        # JIT compilation: libLLVM and its libz3 dependency are about 150 MB,
        # half the image, for a feature that rarely pays off on small tenant
        # databases. Without llvmjit.so the server silently runs without JIT;
        # the entrypoint also sets jit = off.
        "/usr/lib/postgresql/15/lib/llvmjit*",
        "/usr/lib/postgresql/15/lib/bitcode/*",
        "/usr/lib/x86_64-linux-gnu/libLLVM-*",
        "/usr/lib/x86_64-linux-gnu/libz3.so*",
        "/usr/lib/aarch64-linux-gnu/libLLVM-*",
        "/usr/lib/aarch64-linux-gnu/libz3.so*",
    ),
    smoke_test=(
        "sh",
        "-ec",
        "for b in postgres initdb pg_ctl psql pg_dump pg_restore pg_isready; do "
        '/usr/lib/postgresql/15/bin/"$b" --version >/dev/null; done',
    ),
    changes=(
        'CMD ["postgres"]',
        "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin"
        ":/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV PGDATA=/var/lib/postgresql/data",
        "ENV PG_MAJOR=15",
        "ENV LANG=C.UTF-8",
        "EXPOSE 5432",
        # Smart shutdown (SIGTERM) waits for clients to leave; fast shutdown
        # (SIGINT) is what the official image uses for `docker stop`.
        "STOPSIGNAL SIGINT",
    ),
)

#: Written into the MariaDB image: where things live and how the server talks.
#: Sizing (buffer pool, caches, connections) is not here: cloner passes it on
#: the command line, so the official image gets exactly the same.
_MARIADB_CNF = """\
# cloner offline image: container defaults (the official image's are the same).
[mariadbd]
datadir = /var/lib/mysql
socket = /run/mysqld/mysqld.sock
pid-file = /run/mysqld/mysqld.pid
tmpdir = /tmp
bind-address = 0.0.0.0
# Accounts are matched by address; a reverse DNS lookup per connection only
# adds latency (and a stall when there is no resolver).
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_unicode_ci
"""

MYSQL_RECIPE = EngineRecipe(
    engine="mysql",
    # The server binary and its system-table SQL (mariadb-server-core) plus
    # the client programs, mariadb-dump among them (mariadb-client). The
    # `mariadb-server` package adds galera, rsync, socat and SysV scripts a
    # container never runs. xz-utils and zstd: the official contract runs
    # *.sql.xz and *.sql.zst init scripts.
    packages=("mariadb-server-core", "mariadb-client", "xz-utils", "zstd"),
    user="mysql",
    uid=999,
    gid=999,
    home="/var/lib/mysql",
    entrypoint="entrypoint.sh",
    dirs=(
        OwnedDir("/var/lib/mysql", 999, 999, 0o755),
        OwnedDir("/etc/mysql/conf.d", 0, 0, 0o755),
        # Usually a tmpfs at run time (root-owned, with this mode): world-
        # writable and sticky so uid 999 can create its socket there.
        OwnedDir("/run/mysqld", 999, 999, 0o1777),
        OwnedDir("/docker-entrypoint-initdb.d", 0, 0, 0o755),
    ),
    preseed_files=(("/etc/mysql/mariadb.conf.d/50-cloner.cnf", _MARIADB_CNF),),
    # Each client program links the client library statically (about 5 MB
    # apiece); a tenant server needs mariadb, mariadb-dump and mariadb-admin.
    # mariadb-check and mariadb-upgrade stay for an operator's upgrade.
    path_excludes=tuple(
        f"/usr/bin/{name}"
        for name in (
            "mariadb-binlog", "mysqlbinlog", "mariadb-slap", "mysqlslap",
            "mariadb-import", "mysqlimport", "mariadb-show", "mysqlshow",
            "mariadb-conv", "mariadb-plugin", "mysql_plugin",
            "mariadb-tzinfo-to-sql", "mysql_tzinfo_to_sql", "perror", "innochecksum",
        )
    ),
    smoke_test=(
        "sh",
        "-ec",
        "mariadbd --version >/dev/null && mariadb --version >/dev/null && "
        "mariadb-dump --version >/dev/null && mariadb-admin --version >/dev/null && "
        "for f in mysql_system_tables mysql_performance_tables mysql_system_tables_data "
        'maria_add_gis_sp_bootstrap; do test -s "/usr/share/mysql/$f.sql"; done',
    ),
    changes=(
        'CMD ["mariadbd"]',
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        "EXPOSE 3306",
    ),
)

#: Engines that can be built offline, by cloner engine name.
RECIPES: Mapping[str, EngineRecipe] = {
    POSTGRES_RECIPE.engine: POSTGRES_RECIPE,
    MYSQL_RECIPE.engine: MYSQL_RECIPE,
}


@dataclass(frozen=True, slots=True)
class BaseRecipe:
    """A plain Debian image to build other images ``FROM``.

    Unlike an :class:`EngineRecipe` it creates no account and installs no
    entrypoint: the image that derives from it decides both.

    Attributes:
        name: key in :data:`BASE_RECIPES`; also the ``cloner.image.base`` label.
        packages: Debian packages to install (dependencies follow).
        path_excludes: dpkg path filters on top of :data:`COMMON_PATH_EXCLUDES`.
        smoke_test: command run inside the finished root filesystem; a
            non-zero exit fails the build.
        changes: Dockerfile instructions applied by ``docker import`` (the
            ``cloner.image.*`` labels are added by the builder).
    """

    name: str
    packages: tuple[str, ...]
    path_excludes: tuple[str, ...]
    smoke_test: tuple[str, ...]
    changes: tuple[str, ...]


PYTHON_BASE_RECIPE = BaseRecipe(
    name="python",
    # Debian bookworm's python3 is 3.11, what cloner requires. python3-venv
    # brings ensurepip and the pip wheel it installs into a new venv, so a
    # derived image can `pip install --no-index` from a wheelhouse.
    packages=("python3", "python3-venv"),
    path_excludes=(),
    # A venv with a working pip is what derived images need; sqlite3 and ssl
    # are what cloner's control plane and database drivers import.
    smoke_test=(
        "sh",
        "-ec",
        "python3 -c 'import sqlite3, ssl' && python3 -m venv /tmp/smoke-venv && "
        "/tmp/smoke-venv/bin/pip --version >/dev/null && rm -rf /tmp/smoke-venv",
    ),
    changes=(
        'CMD ["python3"]',
        # `docker import` gives an image no environment at all; a derived
        # Dockerfile's `ENV PATH=/x:$PATH` must find the usual one.
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
    ),
)

#: Base images that can be built offline, by name.
BASE_RECIPES: Mapping[str, BaseRecipe] = {PYTHON_BASE_RECIPE.name: PYTHON_BASE_RECIPE}


def build_offline_image(
    engine: str,
    tag: str,
    *,
    work_dir: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> None:
    """Build the image for ``engine`` from Debian packages and tag it ``tag``.

    Blocking; call it through ``asyncio.to_thread``. Needs ``mmdebstrap``,
    root (or unprivileged user namespaces), the Debian mirror and a Docker
    engine (``DOCKER_HOST`` and friends are honoured). ``work_dir`` holds the
    root filesystem while it is built (some 600 MB at peak); it must not be
    shared with a concurrent build. The tarball is removed in all cases.
    An image previously tagged ``tag`` is removed once it is no longer
    tagged and no container uses it.

    Raises:
        ImageBuildError: unknown engine, missing tool, or a failed step.
    """
    recipe = RECIPES.get(engine)
    if recipe is None:
        raise ImageBuildError(
            f"no offline image recipe for engine {engine!r} (known: {', '.join(sorted(RECIPES))})"
        )
    entrypoint = IMAGES_DIR / recipe.engine / recipe.entrypoint
    if not entrypoint.is_file():
        raise ImageBuildError(f"entrypoint {entrypoint} is missing from the package")
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")

    changes = [
        f'ENTRYPOINT ["{ENTRYPOINT_PATH}"]',
        *recipe.changes,
        "LABEL cloner.image.source=offline-build",
        f"LABEL cloner.image.engine={recipe.engine}",
    ]
    _build(
        engine,
        tag,
        lambda rootfs: _mmdebstrap_argv(mmdebstrap, recipe, entrypoint, rootfs),
        changes,
        ("cloner.image.engine", recipe.engine),
        work_dir=work_dir,
        log=log,
    )


def build_base_image(
    name: str,
    tag: str,
    *,
    work_dir: Path,
    log: Callable[[str], None] = lambda _m: None,
) -> None:
    """Build the base image ``name`` (see :data:`BASE_RECIPES`) and tag it ``tag``.

    Same needs, blocking behaviour and clean-up as :func:`build_offline_image`;
    the image gets the labels ``cloner.image.source=offline-build`` and
    ``cloner.image.base=<name>``. The daemon's Dockerfile builds on the
    ``python`` base where ``python:3.11-slim`` cannot be pulled.

    Raises:
        ImageBuildError: unknown base, missing tool, or a failed step.
    """
    recipe = BASE_RECIPES.get(name)
    if recipe is None:
        raise ImageBuildError(
            f"no offline recipe for base image {name!r} (known: {', '.join(sorted(BASE_RECIPES))})"
        )
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ImageBuildError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    changes = [
        *recipe.changes,
        "LABEL cloner.image.source=offline-build",
        f"LABEL cloner.image.base={recipe.name}",
    ]
    _build(
        f"{name} base",
        tag,
        lambda rootfs: _base_argv(mmdebstrap, recipe, rootfs),
        changes,
        ("cloner.image.base", recipe.name),
        work_dir=work_dir,
        log=log,
    )


def _build(
    what: str,
    tag: str,
    argv_for: Callable[[Path], list[str]],
    changes: Sequence[str],
    label: tuple[str, str],
    *,
    work_dir: Path,
    log: Callable[[str], None],
) -> None:
    """mmdebstrap ``argv_for(tarball)``, then import the tarball as ``tag``."""
    # Before spending a minute on the root filesystem: is the engine there,
    # and does it accept the tag?
    previous = _preflight(tag)

    work_dir.mkdir(parents=True, exist_ok=True)
    rootfs = work_dir / "rootfs.tar"
    started = time.monotonic()
    try:
        log(f"building the {what} root filesystem from {DEBIAN_MIRROR} ({DEBIAN_SUITE})")
        _run(
            argv_for(rootfs),
            log=log,
            # The chroot is assembled next to the tarball rather than in /tmp,
            # which may be a small tmpfs.
            env={**os.environ, "TMPDIR": str(work_dir)},
        )
        size_mb = rootfs.stat().st_size / 1e6
        log(f"root filesystem ready ({size_mb:.0f} MB tar) after {time.monotonic() - started:.0f}s")
        image_id = _import(rootfs, tag, changes, label=label, previous=previous, log=log)
    finally:
        rootfs.unlink(missing_ok=True)
    log(f"built {tag} ({image_id[:19]}) in {time.monotonic() - started:.0f}s")


def _mmdebstrap_argv(
    mmdebstrap: str, recipe: EngineRecipe, entrypoint: Path, rootfs: Path
) -> list[str]:
    """The mmdebstrap command line. Hooks are ``sh -c`` strings; ``$1`` is
    the root directory being built (mmdebstrap's hook convention)."""
    q = shlex.quote
    argv = _argv_head(mmdebstrap, recipe.packages, recipe.path_excludes)

    # Essential hooks run after the Essential:yes packages (passwd among
    # them), before anything else installs. Creating the account now means
    # the package's postinst (`adduser --system`) finds and reuses it, so it
    # gets the official image's uid/gid instead of the next free one.
    argv.append(
        "--essential-hook="
        f'chroot "$1" groupadd --system --gid {recipe.gid} {q(recipe.user)} && '
        f'chroot "$1" useradd --system --uid {recipe.uid} --gid {recipe.gid} '
        f"--home-dir {q(recipe.home)} --no-create-home --shell /bin/bash {q(recipe.user)}"
    )
    # Paths inside the image are handled by commands run *in* the chroot: an
    # absolute symlink such as /var/run -> /run must resolve inside the
    # image, never on the build host.
    for path, content in recipe.preseed_files:
        parent = str(PurePosixPath(path).parent)
        script = f"mkdir -p {q(parent)} && printf %s {q(content)} > {q(path)}"
        argv.append(f'--essential-hook=chroot "$1" sh -c {q(script)}')

    # Customize hooks run once everything is installed. The entrypoint's
    # destination, /usr/local/bin, is a plain directory in a Debian tree.
    argv.append(f'--customize-hook=install -m 0755 {q(str(entrypoint))} "$1"{q(ENTRYPOINT_PATH)}')
    for d in recipe.dirs:
        target = q(d.path)
        script = f"mkdir -p {target} && chown {d.uid}:{d.gid} {target} && chmod {d.mode:o} {target}"
        argv.append(f'--customize-hook=chroot "$1" sh -c {q(script)}')
    # Fail the build, not the first tenant, if the account got another id
    # (e.g. the package started creating its user before our hook ran).
    argv.append(
        "--customize-hook="
        f'test "$(chroot "$1" id -u {q(recipe.user)}):$(chroot "$1" id -g {q(recipe.user)})" '
        f"= {recipe.uid}:{recipe.gid}"
    )
    argv += _argv_tail(recipe.smoke_test, _names_in_run(recipe.dirs), rootfs)
    return argv


def _base_argv(mmdebstrap: str, recipe: BaseRecipe, rootfs: Path) -> list[str]:
    """The mmdebstrap command line of a base image: packages, smoke test, clean-up."""
    return [
        *_argv_head(mmdebstrap, recipe.packages, recipe.path_excludes),
        *_argv_tail(recipe.smoke_test, set(), rootfs),
    ]


def _argv_head(
    mmdebstrap: str, packages: Sequence[str], path_excludes: Sequence[str]
) -> list[str]:
    """Variant, packages and dpkg path filters: the start of every build."""
    argv = [
        mmdebstrap,
        "--variant=apt",
        "--include=" + ",".join(packages),
    ]
    for pattern in (*COMMON_PATH_EXCLUDES, *path_excludes):
        argv.append(f"--dpkgopt=path-exclude={pattern}")
    # Keep license texts: they are tiny and redistribution wants them.
    argv.append("--dpkgopt=path-include=/usr/share/doc/*/copyright")
    return argv


def _argv_tail(smoke_test: Sequence[str], kept_in_run: set[str], rootfs: Path) -> list[str]:
    """Smoke test, clean-up, suite and output: the end of every build.
    ``kept_in_run`` are top-level names under /run the image keeps."""
    q = shlex.quote
    argv = ['--customize-hook=chroot "$1" ' + shlex.join(smoke_test)]
    # mmdebstrap's own cleanup also drops the apt lists; saying it here keeps
    # the image small even if that default changes. Logs and caches are
    # build-time noise.
    argv.append(
        "--customize-hook="
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin '
        '"$1"/var/cache/debconf/*-old "$1"/var/log/apt "$1"/var/log/dpkg.log '
        '"$1"/var/log/alternatives.log "$1"/var/cache/ldconfig/aux-cache'
    )
    # mmdebstrap empties /run at the end, which would take our directories
    # below /var/run (a symlink to /run) with it. Do that cleanup here
    # instead, sparing them and /run/lock (which /var/lock points to).
    spare = " ".join(f"! -name {q(name)}" for name in sorted({"lock", *kept_in_run}))
    argv.append("--skip=cleanup/run")
    argv.append(
        f'--customize-hook=find "$1"/run -mindepth 1 -maxdepth 1 {spare} -exec rm -rf {{}} +'
    )
    argv += [DEBIAN_SUITE, str(rootfs), f"deb {DEBIAN_MIRROR} {DEBIAN_SUITE} main"]
    return argv


def _names_in_run(dirs: Sequence[OwnedDir]) -> set[str]:
    """Top-level names under /run of the recipe's directories."""
    names: set[str] = set()
    for d in dirs:
        parts = PurePosixPath(d.path).parts
        if parts[1:2] == ("var",) and parts[2:3] == ("run",):
            parts = ("/", "run", *parts[3:])
        if parts[1:2] == ("run",) and len(parts) > 2:
            names.add(parts[2])
    return names


def _run(argv: Sequence[str], *, log: Callable[[str], None], env: Mapping[str, str]) -> None:
    """Run ``argv``, relay its output to ``log`` line by line, and raise
    :class:`ImageBuildError` with the output's tail if it fails."""
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(env),
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise ImageBuildError(f"cannot run {_render(argv)}: {exc}") from exc

    timed_out = threading.Event()

    def stop() -> None:
        # SIGTERM first: mmdebstrap then unmounts /proc etc. in the chroot
        # itself. SIGKILL only if it does not go.
        timed_out.set()
        proc.terminate()
        try:
            proc.wait(_TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()

    timer = threading.Timer(BUILD_TIMEOUT_S, stop)
    timer.start()
    try:
        if proc.stdout is None:  # pragma: no cover - stdout=PIPE guarantees it
            raise ImageBuildError(f"{_render(argv)}: no output pipe")
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                tail.append(line)
                log(line)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    if rc != 0:
        reason = f"timed out after {BUILD_TIMEOUT_S}s" if timed_out.is_set() else f"exited {rc}"
        raise ImageBuildError(f"{_render(argv)} {reason}: {_oneline(tail)}")


#: Instructions ``docker import --change`` accepts (the engine's list of
#: commit commands). Anything else in a recipe, e.g. STOPSIGNAL on engine
#: 20.10, goes into a Dockerfile ``FROM <imported id>`` built on top: only
#: a config change, no new layer.
_IMPORT_COMMANDS = frozenset(
    {
        "CMD",
        "ENTRYPOINT",
        "ENV",
        "EXPOSE",
        "HEALTHCHECK",
        "LABEL",
        "ONBUILD",
        "USER",
        "VOLUME",
        "WORKDIR",
    }
)


def _preflight(tag: str) -> str | None:
    """Check that the Docker engine answers and takes ``tag`` as a reference;
    return the id of the image ``tag`` names now, if any."""
    try:
        client = docker.from_env(timeout=60)
        try:
            image_id: str = client.images.get(tag).id
        finally:
            client.close()
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError as exc:
        raise ImageBuildError(
            f"docker rejects the tag {tag!r}: {_squash(str(exc.explanation or exc))}"
        ) from exc
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"docker is not reachable: {_squash(str(exc))}") from exc
    return image_id


def _import(
    rootfs: Path,
    tag: str,
    changes: Sequence[str],
    *,
    label: tuple[str, str],
    previous: str | None,
    log: Callable[[str], None],
) -> str:
    """``docker import`` the tarball with ``changes`` and tag the result
    ``tag``; return its id. The finished image must carry ``label`` (key,
    value). ``previous`` is the image ``tag`` named before, removed if unused."""
    repository, version = parse_repository_tag(tag)
    importable = [c for c in changes if c.split(None, 1)[0].upper() in _IMPORT_COMMANDS]
    finishing = [c for c in changes if c not in importable]
    what = f"docker import {rootfs} --change x{len(importable)}"
    log(f"importing into docker as {tag}")
    try:
        client = docker.from_env(timeout=DOCKER_TIMEOUT_S)
        try:
            # Untagged first: `tag` only ever names a finished image. src as
            # a path makes the SDK stream the file instead of reading it in.
            output: Any = client.api.import_image(src=str(rootfs), changes=importable)
            base_id = _imported_id(output, what)
            try:
                if finishing:
                    what = f"docker build FROM {base_id[:19]} ({'; '.join(finishing)})"
                    # The classic builder resolves FROM <id> locally: no registry.
                    dockerfile = "\n".join([f"FROM {base_id}", *finishing, ""])
                    client.images.build(
                        fileobj=io.BytesIO(dockerfile.encode()),
                        tag=tag,
                        pull=False,
                        rm=True,
                        forcerm=True,
                    )
                else:
                    what = f"docker tag {base_id[:19]} {tag}"
                    client.api.tag(base_id, repository, version or "latest")
            except docker.errors.DockerException:
                # Do not leave a nameless 200 MB image behind.
                _remove_untagged(client, base_id, log)
                raise
            image = client.images.get(tag)
            labels = image.labels or {}
            if labels.get(label[0]) != label[1]:
                raise ImageBuildError(f"{what}: the image lacks its labels ({labels})")
            image_id: str = image.id
            log(f"tagged {tag}: {image.attrs.get('Size', 0) / 1e6:.0f} MB")
            if previous and previous != image_id:
                _remove_untagged(client, previous, log)
        finally:
            client.close()
    except docker.errors.APIError as exc:
        raise ImageBuildError(f"{what} failed: {_squash(str(exc.explanation or exc))}") from exc
    except docker.errors.DockerException as exc:
        raise ImageBuildError(f"{what} failed: {_squash(str(exc))}") from exc
    return image_id


def _remove_untagged(client: Any, image_id: str, log: Callable[[str], None]) -> None:
    """Drop an image that lost its tag (or never got one), so rebuilds do not
    pile up dangling images; the engine keeps it if it is still tagged or
    used by a container, which is fine."""
    try:
        client.images.remove(image_id, noprune=False)
    except docker.errors.APIError as exc:
        log(f"kept image {image_id[:19]}: {_squash(str(exc.explanation or exc))}")
    else:
        log(f"removed image {image_id[:19]}")


def _imported_id(output: Any, what: str) -> str:
    """The image id from the import's JSON progress stream. The engine also
    reports some failures there, inside a 200 response, as ``error``."""
    text = output if isinstance(output, str) else json.dumps(output)
    image_id = ""
    for line in text.splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        if message.get("error"):
            raise ImageBuildError(f"{what} failed: {_squash(str(message['error']))}")
        status = str(message.get("status", ""))
        if status.startswith("sha256:"):
            image_id = status
    if not image_id:
        raise ImageBuildError(f"{what}: no image id in the engine's answer: {_squash(text)}")
    return image_id


def _render(argv: Sequence[str]) -> str:
    """The command for an error message: shell-quoted, with the hook and
    dpkg options (dozens of long ones) counted rather than listed."""
    noisy = ("--essential-hook=", "--customize-hook=", "--dpkgopt=", "--skip=")
    shown = [a for a in argv if not a.startswith(noisy)]
    hidden = len(argv) - len(shown)
    text = shlex.join(shown)
    return f"{text} (+{hidden} hook/dpkg options)" if hidden else text


def _oneline(lines: Sequence[str] | collections.deque[str]) -> str:
    return _squash(" | ".join(lines)) or "(no output)"


def _squash(text: str) -> str:
    """One line, bounded: error messages end up in logs and API responses."""
    flat = " ".join(text.split())
    return flat if len(flat) <= _TAIL_CHARS else "..." + flat[-_TAIL_CHARS:]
