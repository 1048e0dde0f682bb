"""``cloner serve``: workers, reconciler, health monitor, HTTP, heartbeat and metrics.

All run in one TaskGroup. Stopping: SIGTERM/SIGINT set the stop event →
workers take no new request, the reconciler and health monitor start no new
pass → in-flight work gets ``shutdown_grace_s`` → the rest is cancelled and
its leases released → HTTP stops. Any background task dying stops the daemon
loudly instead of leaving it half-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Awaitable, Callable

from cloner.app import App
from cloner.daemon.health import HealthMonitor
from cloner.daemon.http import make_server
from cloner.daemon.reconciler import Reconciler
from cloner.daemon.worker import Worker
from cloner.errors import ControlPlaneError, RuntimeUnavailable
from cloner.logging import get_logger
from cloner.migrations.status import sync_migration_metrics
from cloner.settings import Settings

log = get_logger(__name__)

DAEMON_HEARTBEAT_S = 5.0
METRICS_REFRESH_S = 5.0


async def refresh_gauges(app: App) -> None:
    """Queue depth, oldest age and tenants-by-state from the control plane."""
    stats = await app.control_plane.queue_stats()
    app.metrics.queue_depth.labels(state="queued").set(stats.queued)
    app.metrics.queue_depth.labels(state="running").set(stats.running)
    app.metrics.queue_oldest_age.set(stats.oldest_queued_age_s or 0.0)
    app.metrics.set_tenant_counts(await app.control_plane.tenant_counts())
    await sync_migration_metrics(app.control_plane, app.metrics)


class Daemon:
    """The running daemon for one ``App``."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.stop = asyncio.Event()
        self.workers = [Worker(app, f"worker-{i}") for i in range(app.settings.workers)]
        self.reconciler = Reconciler(app)
        self.health = HealthMonitor(app)

    async def run(self) -> None:
        """Serve until stopped by a signal or by ``self.stop``."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        server = make_server(self.app)
        log.info("daemon.start", workers=len(self.workers), http=self.app.settings.http_listen,
                 owner=self.app.owner_id, install=self.app.install_id)
        await self._check_runtime()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat(), name="heartbeat")
                group.create_task(self._gauges(), name="metrics")
                http = group.create_task(server.serve(), name="http")
                workers = [
                    group.create_task(self._supervised(w), name=w.name) for w in self.workers
                ]
                watchers = [
                    group.create_task(self._watched("reconciler", self.reconciler.run),
                                      name="reconciler"),
                    group.create_task(self._watched("health", self.health.run), name="health"),
                ]
                await self.stop.wait()
                # Workers and watchers stop together: a repair waiting for a database to
                # start gets the same grace as a provisioning step, then is cancelled (the
                # next daemon's first pass picks it up again).
                await self._drain([*workers, *watchers])
                server.should_exit = True
                await http
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            with contextlib.suppress(Exception):
                await self.app.control_plane.remove_daemon(self.app.owner_id)
            log.info("daemon.stopped")

    async def _check_runtime(self) -> None:
        """Create the tenant network and report the Docker engine's settings.

        A Docker engine that does not answer is reported, not fatal: a daemon
        started before dockerd, or in a container without access to the socket,
        still serves /healthz, /metrics and a /readyz that says why it is not
        ready, exactly as when dockerd goes away under a running daemon. The
        reconciler sets ``cloner_runtime_up`` and provisioning retries; the
        network is created by the first provisioning that needs it.
        """
        try:
            await self.app.runtime.ensure_network(self.app.settings.tenant_network)
            facts = await self.app.runtime.engine_facts()
        except RuntimeUnavailable as exc:
            self.app.metrics.runtime_up.set(0)
            log.warning("daemon.docker_unreachable", error=exc.message,
                        hint="check the Docker socket (CLONER_DOCKER_URL) and that this user "
                             "may open it; serving anyway, /readyz reports it")
            return
        log.info("daemon.docker_engine", **facts)
        if not facts["live_restore"]:
            log.warning("daemon.docker_live_restore_off",
                        hint="tenant databases stop while dockerd restarts; set "
                             "\"live-restore\": true in /etc/docker/daemon.json")

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("daemon.stopping", signal=sig.name)
        self.stop.set()

    async def _supervised(self, worker: Worker) -> None:
        try:
            await worker.run(self.stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("daemon.worker_crashed", worker=worker.name)
            self.stop.set()
            raise

    async def _watched(
        self, name: str, loop: Callable[[asyncio.Event], Awaitable[None]]
    ) -> None:
        try:
            await loop(self.stop)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("daemon.task_crashed", task=name)
            self.stop.set()
            raise

    async def _drain(self, workers: list[asyncio.Task[None]]) -> None:
        grace = self.app.settings.shutdown_grace_s
        _done, pending = await asyncio.wait(workers, timeout=grace)
        if pending:
            log.warning("daemon.grace_expired", cancelled=len(pending))
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _heartbeat(self) -> None:
        host = socket.gethostname()
        while not self.stop.is_set():
            try:
                await self.app.control_plane.heartbeat_daemon(
                    self.app.owner_id, os.getpid(), host)
            except ControlPlaneError as exc:
                # Only `cloner status` reads this row; a busy control plane must not end
                # the TaskGroup (and with it every worker). The next beat tries again.
                log.warning("daemon.heartbeat_failed", error=exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), DAEMON_HEARTBEAT_S)

    async def _gauges(self) -> None:
        while not self.stop.is_set():
            try:
                await refresh_gauges(self.app)
            except Exception as exc:  # a metrics hiccup must not stop provisioning
                log.warning("daemon.metrics_refresh_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), METRICS_REFRESH_S)


async def serve(settings: Settings) -> None:
    """Open the app and run the daemon until a signal stops it."""
    async with App.open(settings) as app:
        await Daemon(app).run()
