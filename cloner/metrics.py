"""Prometheus metrics, on a registry owned by the app (tests get a fresh one each)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from cloner import __version__, constants


class Metrics:
    """Every metric cloner exports. Names follow Prometheus conventions."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.provision_duration = Histogram(
            "cloner_provision_duration_seconds",
            "Duration of provisioning, per engine and step (step=total for end to end).",
            ["engine", "step"], buckets=constants.PROVISION_BUCKETS_S, registry=r,
        )
        self.provisions = Counter(
            "cloner_provisions_total",
            "Provisioning requests finished, by engine, outcome and error class.",
            ["engine", "outcome", "error_class"], registry=r,
        )
        self.retries = Counter(
            "cloner_provision_retries_total",
            "Transient provisioning failures that were retried, by engine and step.",
            ["engine", "step"], registry=r,
        )
        self.deprovisions = Counter(
            "cloner_deprovisions_total", "Deprovisioning requests finished, by outcome.",
            ["outcome"], registry=r,
        )
        self.restores = Counter(
            "cloner_restores_total", "Restore requests finished, by engine and outcome.",
            ["engine", "outcome"], registry=r,
        )
        self.restore_duration = Histogram(
            "cloner_restore_duration_seconds", "Duration of restores end to end, by engine.",
            ["engine"], buckets=constants.PROVISION_BUCKETS_S, registry=r,
        )
        self.queue_depth = Gauge(
            "cloner_queue_depth", "Requests in the queue, by state.", ["state"], registry=r,
        )
        self.queue_oldest_age = Gauge(
            "cloner_queue_oldest_age_seconds",
            "Age of the oldest queued (not yet running) request.", registry=r,
        )
        self.tenants = Gauge(
            "cloner_tenants", "Tenants in the registry, by state and engine.",
            ["state", "engine"], registry=r,
        )
        self.isolation_checks = Counter(
            "cloner_isolation_checks_total", "Isolation checks run, by check and outcome.",
            ["check", "outcome"], registry=r,
        )
        self.backups = Counter(
            "cloner_backups_total", "Backups taken, by engine and outcome.",
            ["engine", "outcome"], registry=r,
        )
        self.backup_size = Gauge(
            "cloner_backup_last_size_bytes", "Size of the last backup, by engine.",
            ["engine"], registry=r,
        )
        self.backup_duration = Histogram(
            "cloner_backup_duration_seconds", "Duration of backups, by engine.",
            ["engine"], buckets=constants.PROVISION_BUCKETS_S, registry=r,
        )
        self.tenant_up = Gauge(
            "cloner_tenant_up", "1 if the tenant database answered its last health probe.",
            ["tenant", "engine"], registry=r,
        )
        self.tenant_probe_seconds = Gauge(
            "cloner_tenant_probe_seconds", "Latency of the last health probe.",
            ["tenant", "engine"], registry=r,
        )
        self.tenant_memory_bytes = Gauge(
            "cloner_tenant_memory_bytes", "Memory used by the tenant container (minus cache).",
            ["tenant", "engine"], registry=r,
        )
        self.tenant_cpu_ratio = Gauge(
            "cloner_tenant_cpu_ratio", "CPU used by the tenant container, in cores.",
            ["tenant", "engine"], registry=r,
        )
        self.tenant_volume_bytes = Gauge(
            "cloner_tenant_volume_bytes",
            "Disk used by the tenant's data volume (sampled every "
            "CLONER_VOLUME_SAMPLE_INTERVAL_S).", ["tenant", "engine"], registry=r,
        )
        self.tenant_volume_quota_bytes = Gauge(
            "cloner_tenant_volume_quota_bytes",
            "CLONER_TENANT_VOLUME_QUOTA_BYTES: disk a tenant volume may use (0: no quota).",
            registry=r,
        )
        self.data_dir_free_bytes = Gauge(
            "cloner_data_dir_free_bytes",
            "Free bytes on the file system of CLONER_DATA_DIR (control plane, backups).",
            registry=r,
        )
        self.health_transitions = Counter(
            "cloner_health_transitions_total", "ready <-> degraded transitions, by target state.",
            ["to"], registry=r,
        )
        self.reconcile_actions = Counter(
            "cloner_reconcile_actions_total", "Actions taken by the reconciler, by action.",
            ["action"], registry=r,
        )
        self.orphans = Gauge(
            "cloner_orphans",
            "Quarantined orphans by kind: resources labelled with this install that no "
            "registry row wants, left in place for an admin (cloner orphans list).",
            ["kind"], registry=r,
        )
        self.reconcile_last_success = Gauge(
            "cloner_reconcile_last_success_timestamp_seconds",
            "Unix time of the last reconciler pass that completed.", registry=r,
        )
        self.runtime_up = Gauge(
            "cloner_runtime_up", "1 if the container runtime (Docker) answered the last check.",
            registry=r,
        )
        self.http_requests = Counter(
            "cloner_http_requests_total", "HTTP requests served, by route, method and status.",
            ["route", "method", "status"], registry=r,
        )
        self.http_duration = Histogram(
            "cloner_http_request_duration_seconds", "HTTP request latency, by route.",
            ["route"], registry=r,
        )
        self.workers_busy = Gauge(
            "cloner_workers_busy", "Workers currently running a request.", registry=r,
        )
        self.leases_lost = Counter(
            "cloner_worker_leases_lost_total",
            "Attempts stopped because their lease was lost, by reason (taken_over: another "
            "attempt holds the request; unconfirmed: renewals failed until it could expire).",
            ["reason"], registry=r,
        )
        self.worker_control_plane_errors = Counter(
            "cloner_worker_control_plane_errors_total",
            "Control-plane errors a worker caught and retried (claim or outcome not recorded).",
            registry=r,
        )
        self.pool_connections_in_use = Gauge(
            "cloner_pool_connections_in_use",
            "Connections currently acquired from a tenant pool, by tenant and role.",
            ["tenant", "role"], registry=r,
        )
        self.pool_connections_idle = Gauge(
            "cloner_pool_connections_idle",
            "Open connections waiting in a tenant pool, by tenant and role.",
            ["tenant", "role"], registry=r,
        )
        self.pool_acquire_wait = Histogram(
            "cloner_pool_acquire_wait_seconds",
            "Time spent waiting for a pooled tenant connection (pool creation included).",
            buckets=constants.POOL_ACQUIRE_BUCKETS_S, registry=r,
        )
        self.pool_acquire_failures = Counter(
            "cloner_pool_acquire_failures_total",
            "Pooled connection acquires that failed, by reason "
            "(not_found, unavailable, exhausted, connect).",
            ["reason"], registry=r,
        )
        self.pools_open = Gauge(
            "cloner_pools_open", "Tenant connection pools currently open.", registry=r,
        )
        self.pool_evictions = Counter(
            "cloner_pool_evictions_total",
            "Idle tenant pools closed to stay under CLONER_POOL_MAX_OPEN.", registry=r,
        )
        # Schema migrations. They follow the registry (cloner.migrations.status), so the
        # daemon exports what any process's `cloner migrate` did, across restarts too.
        self.migrations = Counter(
            "cloner_migrations_total",
            "Tenant migrations finished, by engine and outcome (migrated, up_to_date, "
            "rolled_back, restored, refused, stuck, skipped, not_started).",
            ["engine", "outcome"], registry=r,
        )
        self.migration_step_duration = Histogram(
            "cloner_migration_step_duration_seconds",
            "Duration of schema-migration steps run on tenant databases, by engine, step "
            "and direction (up, down).",
            ["engine", "step", "direction"], buckets=constants.MIGRATION_STEP_BUCKETS_S,
            registry=r,
        )
        self.tenants_by_version = Gauge(
            "cloner_tenants_by_version",
            "Tenants with a database (ready, degraded, migrating), by engine and template "
            "version.", ["engine", "version"], registry=r,
        )
        #: Highest registry ids already counted in the two migration metrics above.
        self.migration_cursor: dict[str, int] = {"steps": 0, "outcomes": 0}
        self.build_info = Info("cloner_build", "cloner version and Python runtime.", registry=r)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

    def set_version_counts(self, counts: dict[tuple[str, str], int]) -> None:
        """Replace the tenants-per-version gauge ((engine, version) → tenants)."""
        self.tenants_by_version.clear()
        for (engine, version), n in counts.items():
            self.tenants_by_version.labels(engine=engine, version=version).set(n)

    def set_tenant_counts(self, counts: dict[tuple[str, str], int]) -> None:
        """Replace the tenant gauge with fresh counts (states that vanished go to 0)."""
        self.tenants.clear()
        for (state, engine), n in counts.items():
            self.tenants.labels(state=state, engine=engine).set(n)
