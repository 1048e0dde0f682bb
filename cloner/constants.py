"""Names and defaults shared across the package: label keys, metric names, limits.

Units are in the names (``_s``, ``_bytes``) so call sites need no comments.
"""

from typing import Final

LABEL_PREFIX: Final = "cloner."
LABEL_MANAGED: Final = "cloner.managed"
LABEL_INSTALL: Final = "cloner.install"
LABEL_TENANT: Final = "cloner.tenant"
LABEL_REQUEST: Final = "cloner.request"
LABEL_ENGINE: Final = "cloner.engine"
LABEL_TEMPLATE_VERSION: Final = "cloner.template_version"
LABEL_ROLE: Final = "cloner.role"
#: The industry overlay a tenant was created with (lets ``cloner orphans adopt`` say it).
LABEL_INDUSTRY: Final = "cloner.industry"

CONTAINER_PREFIX: Final = "cloner-"
VOLUME_SUFFIX: Final = "-data"
#: Name suffix and role label of the short-lived container that dumps a kept volume.
#: A dot never occurs in a tenant id, so the name cannot be another tenant's container.
VOLUME_DUMP_SUFFIX: Final = ".volume-dump"
ROLE_VOLUME_DUMP: Final = "volume-dump"

TENANT_ID_PATTERN: Final = r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$"

# Secrets
PASSWORD_BYTES: Final = 24  # token_urlsafe(24) -> 32 chars, 192 bits
SECRET_KEY_FILE: Final = "secret.key"  # noqa: S105 - a file name
ADMIN_TOKEN_FILE: Final = "admin.token"  # noqa: S105 - a file name
CONTROL_PLANE_FILE: Final = "control-plane.sqlite3"
INSTALL_ID_FILE: Final = "install.id"

# Queue / leases (RELIABILITY.md defaults)
LEASE_TTL_S: Final = 30.0
HEARTBEAT_INTERVAL_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.5
SHUTDOWN_GRACE_S: Final = 15.0
MAX_ATTEMPTS: Final = 5
BACKOFF_BASE_S: Final = 1.0
BACKOFF_CAP_S: Final = 30.0
BACKOFF_JITTER: Final = 0.2

# Backups and retention
BACKUP_SUFFIX: Final = ".dump"
MANIFEST_SUFFIX: Final = ".json"
CHECKSUM_SUFFIX: Final = ".sha256"
RETENTION_DAYS: Final = 30.0
#: How long a dump waits for a table lock held by the tenant before it gives up.
DUMP_LOCK_TIMEOUT_S: Final = 30.0
#: Overall deadline of one backup (dump and read-back); a dump past it is killed.
BACKUP_TIMEOUT_S: Final = 1800.0
#: Deadline of any single exec into a tenant container (the last line of defence).
EXEC_TIMEOUT_S: Final = 3600.0
#: Deadline of one tenant's health check (probe, sample, isolation re-proof) in a pass.
HEALTH_CHECK_TIMEOUT_S: Final = 60.0

# Isolation proof
#: Vouched neighbours sampled per proof (``CLONER_ISOLATION_SAMPLE``).
ISOLATION_SAMPLE: Final = 3

# Who asked for a request (``actor`` in payloads and history events)
ACTOR_HTTP: Final = "http"
ACTOR_CLI_PREFIX: Final = "cli:"
ACTOR_RETENTION: Final = "retention"
#: Events shown by ``tenant show`` (the newest ones; the registry keeps them all).
SHOWN_EVENTS: Final = 50

# MariaDB tenant servers ("mysql" engine), sized for density
MYSQL_INNODB_BUFFER_POOL_MB: Final = 16
#: Tenant container log rotation (Docker json-file): at most files x size per container.
TENANT_LOG_MAX_SIZE: Final = "10m"
TENANT_LOG_MAX_FILES: Final = 3

# Readiness
READY_TIMEOUT_S: Final = 60.0
READY_PROBE_INTERVAL_S: Final = 0.05
READY_PROBE_MAX_INTERVAL_S: Final = 0.5

# Sessions cloner opens on tenant servers (overridable: CLONER_ADMIN_*_TIMEOUT_S)
#: Longest single statement; template and migration scripts lift it for their own transaction.
ADMIN_STATEMENT_TIMEOUT_S: Final = 120.0
#: Longest wait for a lock a tenant session holds.
ADMIN_LOCK_TIMEOUT_S: Final = 10.0

# Metrics
METRIC_PREFIX: Final = "cloner_"
PROVISION_BUCKETS_S: Final = (
    0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 30.0, 60.0,
)
#: Pooled-connection waits: a warm acquire is sub-millisecond, a cold one opens a pool.
POOL_ACQUIRE_BUCKETS_S: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
#: Schema-migration steps: a small step takes milliseconds, a backfill of a big table minutes.
MIGRATION_STEP_BUCKETS_S: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
#: How long a pool being closed gets to close gracefully before it is terminated.
POOL_CLOSE_TIMEOUT_S: Final = 10.0
