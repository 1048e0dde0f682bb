"""Pool overhead benchmark: acquire + ``SELECT 1`` through TenantPools vs a bare asyncpg pool.

Provisions one postgres tenant in a temporary data dir, warms both pools, then
runs N sequential iterations on each against the same container and prints
p50/p95 of each and their ratio (target: TenantPools ≤ 1.2x the bare pool).
Everything created is removed at the end.

    .venv/bin/python benchmarks/pools.py --iterations 2000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
from figures import percentile  # benchmarks/figures.py

from cloner.app import App
from cloner.daemon.worker import Worker
from cloner.domain import RequestStatus
from cloner.logging import configure_logging
from cloner.pools import TenantPools
from cloner.settings import Settings
from cloner.tenants import TenantService

TENANT = "bench-pools"
WARMUP = 200


async def provision(app: App) -> None:
    """Provision the benchmark tenant with one real worker."""
    request = await TenantService(app).create(TENANT, "postgres", "none")
    stop = asyncio.Event()

    async def watch() -> None:
        while True:
            current = await app.control_plane.get_request(request.id)
            if current is not None and current.status in (RequestStatus.DONE,
                                                          RequestStatus.FAILED):
                stop.set()
                return
            await asyncio.sleep(0.1)

    await asyncio.gather(watch(), Worker(app, "bench").run(stop))
    tenant = await TenantService(app).get(TENANT)
    if tenant.status.value != "ready":
        raise SystemExit(f"provisioning failed: {tenant.error}")


async def timed(n: int, once: Callable[[], Awaitable[None]]) -> list[float]:
    """Seconds per call of ``once``, ``n`` times in a row."""
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await once()
        samples.append(time.perf_counter() - started)
    return samples


async def run(args: argparse.Namespace) -> None:
    """Provision, benchmark both paths, print, clean up."""
    configure_logging("warning", "json")
    data_dir = Path(tempfile.mkdtemp(prefix="cloner-bench-"))
    settings = Settings(data_dir=data_dir, log_level="warning", log_format="json")
    async with App.open(settings) as app:
        try:
            await provision(app)
            tenant = await TenantService(app).get(TENANT)
            _engine, target = await app.services.target(tenant)
            cred = target.credentials.roles["app"]
            bare = await asyncpg.create_pool(
                host=target.endpoint.host, port=target.endpoint.port, user=cred.username,
                password=cred.password, database=target.database, ssl=False,
                min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                command_timeout=settings.pool_command_timeout_s,
            )
            pools = TenantPools(settings, app.control_plane, app.vault, app.metrics)

            async def through_pools() -> None:
                async with pools.acquire(TENANT, role="app") as conn:
                    await conn.fetchval("SELECT 1")

            async def through_bare() -> None:
                async with bare.acquire(timeout=settings.pool_acquire_timeout_s) as conn:
                    await conn.fetchval("SELECT 1")

            try:
                await timed(WARMUP, through_pools)
                await timed(WARMUP, through_bare)
                # Alternate halves so drift (page cache, CPU frequency) hits both sides alike.
                half = args.iterations // 2
                bare_s = await timed(half, through_bare)
                pools_s = await timed(half, through_pools)
                bare_s += await timed(args.iterations - half, through_bare)
                pools_s += await timed(args.iterations - half, through_pools)
            finally:
                await pools.close()
                await bare.close()
            report(args.iterations, bare_s, pools_s)
        finally:
            owned = await app.runtime.owned()
            await asyncio.gather(*(app.runtime.remove_container(c.name)
                                   for c in owned.containers))
            await asyncio.gather(*(app.runtime.remove_volume(v) for v in owned.volumes))
    shutil.rmtree(data_dir, ignore_errors=True)


def report(n: int, bare_s: list[float], pools_s: list[float]) -> None:
    """Print p50/p95 in milliseconds and the TenantPools / bare ratios."""
    print(f"acquire + SELECT 1, sequential, warm pool, N={n} each")
    for name, values in (("bare asyncpg pool", bare_s), ("TenantPools", pools_s)):
        print(f"  {name:<18} p50 {percentile(values, 50) * 1e3:7.3f} ms   "
              f"p95 {percentile(values, 95) * 1e3:7.3f} ms   "
              f"mean {statistics.fmean(values) * 1e3:7.3f} ms")
    p50 = percentile(pools_s, 50) / percentile(bare_s, 50)
    p95 = percentile(pools_s, 95) / percentile(bare_s, 95)
    verdict = "ok" if max(p50, p95) <= 1.2 else "ABOVE TARGET"
    print(f"  ratio TenantPools / bare: p50 {p50:.3f}x   p95 {p95:.3f}x   "
          f"(target <= 1.2x: {verdict})")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
