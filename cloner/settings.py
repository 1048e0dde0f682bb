"""All configuration, read once from ``CLONER_*`` environment variables.

One ``Settings`` object is built at the edge (CLI, daemon, tests) and passed
down; nothing below reads the environment. A ``.env`` file is read only from
the explicit path in ``CLONER_ENV_FILE`` (``load_settings``), never from the
working directory: a CLI run in a directory someone else can write must not
pick up their templates, Docker endpoint or keys.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cloner import constants
from cloner.secrets import token_problem

#: Names the explicit ``.env`` file; read by ``load_settings`` only.
ENV_FILE_VARIABLE = "CLONER_ENV_FILE"

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "cloner"


class Settings(BaseSettings):
    """cloner's settings; every field maps to ``CLONER_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="CLONER_", env_file=None, extra="ignore", frozen=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    control_plane_url: str | None = None
    bind_host: str = "127.0.0.1"
    http_listen: str = "127.0.0.1:8080"
    admin_token: SecretStr | None = None
    secret_key: SecretStr | None = None
    #: Bearer token ``/metrics`` requires when set (unset: /metrics is open, as before).
    metrics_token: SecretStr | None = None

    templates_dir: Path = _REPO_ROOT / "templates"
    industry_templates_dir: Path = _REPO_ROOT / "industry_templates"

    postgres_image: str = "postgres:15"
    mysql_image: str = "mariadb:10.11"
    mongo_image: str = "mongo:7"
    image_pull_timeout_s: float = 60.0

    docker_url: str | None = None
    tenant_network: str = "cloner-tenants"
    tenant_memory_limit_bytes: int = Field(default=256 * 1024 * 1024, ge=32 * 1024 * 1024)
    tenant_nano_cpus: int = Field(default=1_000_000_000, ge=10_000_000)
    tenant_pids_limit: int = Field(default=256, ge=32)
    tenant_shm_size_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    tenant_connection_limit: int = Field(default=40, ge=1)
    #: Container log rotation (Docker json-file ``max-size`` / ``max-file``).
    tenant_log_max_size: str = Field(default=constants.TENANT_LOG_MAX_SIZE,
                                     pattern=r"^[1-9][0-9]*[kmg]?$")
    tenant_log_max_files: int = Field(default=constants.TENANT_LOG_MAX_FILES, ge=1, le=100)
    #: Disk a tenant volume may use before ``ClonerTenantVolumeOverQuota`` fires (0: none).
    tenant_volume_quota_bytes: int = Field(default=10 * 1024**3, ge=0)
    #: Also ask the volume driver to enforce the quota (``size`` option): Docker's local
    #: driver supports it only on XFS mounted with ``pquota``; elsewhere creation fails.
    tenant_volume_size_limit: bool = False
    #: How often the health monitor measures volume sizes (one listing for all tenants).
    volume_sample_interval_s: float = Field(default=60.0, gt=0)
    #: InnoDB buffer pool of each MariaDB tenant server; the main lever on its idle memory.
    mysql_innodb_buffer_pool_mb: int = Field(default=constants.MYSQL_INNODB_BUFFER_POOL_MB, ge=5)

    workers: int = Field(default=4, ge=1, le=64)
    lease_ttl_s: float = Field(default=constants.LEASE_TTL_S, gt=0)
    heartbeat_interval_s: float = Field(default=constants.HEARTBEAT_INTERVAL_S, gt=0)
    poll_interval_s: float = Field(default=constants.POLL_INTERVAL_S, gt=0)
    shutdown_grace_s: float = Field(default=constants.SHUTDOWN_GRACE_S, ge=0)
    max_attempts: int = Field(default=constants.MAX_ATTEMPTS, ge=1)
    backoff_base_s: float = Field(default=constants.BACKOFF_BASE_S, gt=0)
    backoff_cap_s: float = Field(default=constants.BACKOFF_CAP_S, gt=0)
    ready_timeout_s: float = Field(default=constants.READY_TIMEOUT_S, gt=0)
    step_timeout_s: float = Field(default=120.0, gt=0)
    #: statement_timeout / max_statement_time of every session cloner opens on a tenant
    #: server (superuser and tenant-role probes); set at connect time, tenants cannot lift it.
    admin_statement_timeout_s: float = Field(default=constants.ADMIN_STATEMENT_TIMEOUT_S, gt=0)
    #: lock_timeout / lock_wait_timeout of those sessions: a tenant's lock fails them fast.
    admin_lock_timeout_s: float = Field(default=constants.ADMIN_LOCK_TIMEOUT_S, gt=0)
    #: How long a dump (pg_dump, mariadb-dump) waits for a lock the tenant holds on one of
    #: its tables before the backup fails: a tenant may fail its own backup, not pin a worker.
    dump_lock_timeout_s: float = Field(default=constants.DUMP_LOCK_TIMEOUT_S, gt=0)
    #: Overall deadline of one backup (dump and read-back); a dump past it is killed.
    backup_timeout_s: float = Field(default=constants.BACKUP_TIMEOUT_S, gt=0)
    #: Deadline of any exec into a tenant container that names none of its own; when it
    #: passes, the exec'd process is killed inside the container.
    exec_timeout_s: float = Field(default=constants.EXEC_TIMEOUT_S, gt=0)
    keep_failed: bool = False

    # Reconciler and health monitor (RELIABILITY.md: reconcile 15 s, orphan grace 2x lease TTL).
    reconcile_interval_s: float = Field(default=15.0, gt=0)
    orphan_grace_s: float = Field(default=60.0, ge=0)
    #: Set for one start to let a missing or new, empty control plane take over this install
    #: id (the refusal message names it); its tenants then show as quarantined orphans.
    adopt_install: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{3,63}$")
    health_interval_s: float = Field(default=15.0, gt=0)
    isolation_interval_s: float = Field(default=600.0, gt=0)
    #: Vouched neighbours one isolation proof asks about the tenant's credentials (a
    #: rotating sample: the cross-tenant cost per proof does not grow with the fleet).
    isolation_sample: int = Field(default=constants.ISOLATION_SAMPLE, ge=1, le=100)
    #: Deadline of one tenant's check in a health pass (probe, sample, isolation re-proof):
    #: a tenant that stalls its check is reported and skipped, the others are checked.
    health_check_timeout_s: float = Field(default=constants.HEALTH_CHECK_TIMEOUT_S, gt=0)
    #: Days a deprovisioned tenant's volume is kept before the reconciler purges it (only
    #: once a verified backup exists). 0 purges at the next pass.
    retention_days: float = Field(default=constants.RETENTION_DAYS, ge=0)
    #: READY tenants hardened below their engine's level that one reconciler pass may queue
    #: a ``harden`` request for (queued or running ones count against it); 0 turns it off.
    harden_per_pass: int = Field(default=2, ge=0, le=100)
    #: After a failed ``harden`` request, seconds before a pass queues that tenant again.
    harden_retry_s: float = Field(default=3600.0, ge=0)

    # Per-tenant connection pools for applications (cloner.pools).
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=20, ge=1)
    pool_acquire_timeout_s: float = Field(default=30.0, gt=0)
    pool_command_timeout_s: float = Field(default=60.0, gt=0)
    #: Open pools kept at once; idle ones beyond it are closed least recently used first.
    pool_max_open: int = Field(default=100, ge=1)
    pool_refresh_interval_s: float = Field(default=2.0, gt=0)
    #: How long a rotated-out login keeps working after the registry switched to the new
    #: one (``cloner tenant rotate``): longer than pools take to notice and drain.
    rotation_grace_s: float = Field(default=120.0, ge=0)

    # Application tokens (cloner.pools.routing): exactly one of secret (HS256) or public key
    # (RS256, a PEM file path or the PEM itself) turns token routing on.
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_audience: str = Field(default="cloner", min_length=1)
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)
    #: When set, every token must carry ``iss`` equal to it.
    jwt_issuer: str | None = Field(default=None, min_length=1)
    #: Longest accepted token lifetime: ``exp - iat`` and ``exp - now`` (plus leeway).
    jwt_max_lifetime_s: float = Field(default=86_400.0, gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("control_plane_url")
    @classmethod
    def _supported_control_plane(cls, value: str | None) -> str | None:
        if value is not None and not (
            value.startswith("sqlite:///") and len(value) > len("sqlite:///")
        ):
            raise ValueError(
                "only sqlite:///ABSOLUTE/PATH is supported (PostgreSQL control plane: later)"
            )
        return value

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> Settings:
        # A heartbeat slower than the lease would let every long step lose its lease.
        if self.heartbeat_interval_s >= self.lease_ttl_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s}) must be shorter than "
                f"lease_ttl_s ({self.lease_ttl_s})"
            )
        return self

    @model_validator(mode="after")
    def _pool_sizes_ordered(self) -> Settings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(
                f"pool_min_size ({self.pool_min_size}) must not exceed "
                f"pool_max_size ({self.pool_max_size})"
            )
        return self

    @field_validator("admin_token", "metrics_token")
    @classmethod
    def _usable_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Fail closed: an empty or short token would let `Authorization: Bearer` through.
        if value is None:
            return None
        token = value.get_secret_value().strip()
        problem = token_problem(token)
        if problem:
            raise ValueError(f"the token {problem}; use e.g. `openssl rand -base64 32`")
        return SecretStr(token)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def control_plane_path(self) -> Path:
        """The SQLite control-plane file (the embedded default)."""
        url = self.control_plane_url
        if url is None:
            return self.data_dir / constants.CONTROL_PLANE_FILE
        if url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///"))
        raise ValueError(f"unsupported control plane URL scheme: {url.split(':', 1)[0]}")

    @property
    def backups_dir(self) -> Path:
        """Where logical backups are written."""
        return self.data_dir / "backups"

    @property
    def http_host_port(self) -> tuple[str, int]:
        """``CLONER_HTTP_LISTEN`` split into host and port."""
        host, _, port = self.http_listen.rpartition(":")
        return host or "127.0.0.1", int(port)

    def image_for(self, engine: str) -> str:
        """The image configured for an engine."""
        return {
            "postgres": self.postgres_image,
            "mysql": self.mysql_image,
            "mongodb": self.mongo_image,
        }[engine]


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """``Settings`` from the environment, plus the ``.env`` file ``CLONER_ENV_FILE`` names.

    Without ``CLONER_ENV_FILE`` no ``.env`` file is read at all; a named file that
    does not exist is an error rather than silently skipped. Environment
    variables win over the file.
    """
    environ = os.environ if environ is None else environ
    env_file = environ.get(ENV_FILE_VARIABLE, "").strip()
    if not env_file:
        return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
    path = Path(env_file).expanduser()
    if not path.is_file():
        raise ValueError(f"{ENV_FILE_VARIABLE}={env_file} is not a readable file")
    return Settings(_env_file=path, **overrides)  # type: ignore[call-arg]
