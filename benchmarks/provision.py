"""Provisioning benchmark: provisions N tenants through the real queue and workers.

Prints per-step p50/p95/max and end-to-end figures, the daemon-side peak RSS
and the idle memory of the tenant containers. Everything it creates lives in
a temporary data dir and is removed at the end (``--keep`` to keep it).

    .venv/bin/python benchmarks/provision.py --engine postgres --count 10
    .venv/bin/python benchmarks/provision.py --count 20 --concurrency 4
    .venv/bin/python benchmarks/provision.py --engine mysql --count 10 --prefix my-bench
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from figures import print_row  # benchmarks/figures.py

from cloner.app import App
from cloner.daemon.worker import Worker
from cloner.domain import Engine, RequestStatus
from cloner.engines import Placement, get_engine
from cloner.logging import configure_logging
from cloner.pipeline import PROVISION_STEPS
from cloner.settings import Settings
from cloner.tenants import TenantService

INDUSTRIES = ("technology", "healthcare", "finance", "none")


async def container_memory_bytes(app: App, names: list[str]) -> list[int]:
    """Current memory use (minus page cache) of the given containers, sampled 8 at a time."""
    limiter = asyncio.Semaphore(8)

    async def one(name: str) -> int | None:
        async with limiter:
            stats = await app.runtime.stats(name)
        return stats.memory_bytes if stats else None

    samples = await asyncio.gather(*(one(n) for n in names))
    return [s for s in samples if s is not None]


async def provision_all(
    app: App, args: argparse.Namespace
) -> tuple[dict[str, float], float]:
    """Enqueue every tenant, run the workers; per-tenant enqueue→finish seconds, wall time."""
    service = TenantService(app)
    enqueued_at: dict[str, float] = {}
    requests = []
    for i in range(args.count):
        tenant_id = f"{args.prefix}-{i:03d}"
        enqueued_at[tenant_id] = time.monotonic()
        requests.append(await service.create(
            tenant_id, args.engine, INDUSTRIES[i % len(INDUSTRIES)]))
    stop = asyncio.Event()
    e2e: dict[str, float] = {}

    async def watch() -> None:
        while len(e2e) < len(requests):
            for r in requests:
                current = await app.control_plane.get_request(r.id)
                if r.tenant_id not in e2e and current and current.status in (
                        RequestStatus.DONE, RequestStatus.FAILED):
                    e2e[r.tenant_id] = time.monotonic() - enqueued_at[r.tenant_id]
            await asyncio.sleep(0.02)
        stop.set()

    started = time.monotonic()
    workers = [Worker(app, f"bench-{n}") for n in range(args.concurrency)]
    await asyncio.gather(watch(), *(w.run(stop) for w in workers))
    return e2e, time.monotonic() - started


async def report(app: App, args: argparse.Namespace, e2e: dict[str, float],
                 wall: float) -> None:
    """Print per-step percentiles, end-to-end figures and memory."""
    tenants = await app.control_plane.list_tenants()
    ready = [t for t in tenants if t.status.value == "ready"]
    failed = [t for t in tenants if t.status.value != "ready"]
    steps: dict[str, list[float]] = {s: [] for s in PROVISION_STEPS}
    for t in ready:
        for step, seconds in t.timings.get("steps", {}).items():
            steps.setdefault(step, []).append(float(seconds))
    print(f"\nengine={args.engine} tenants={args.count} concurrency={args.concurrency} "
          f"ready={len(ready)} failed={len(failed)} wall={wall:.1f}s")
    print(f"{'step':<22}{'p50 s':>9}{'p95 s':>9}{'max s':>9}")
    for step, values in steps.items():
        if values:
            print_row(step, values)
    if ready:
        print_row("dequeue->ready", [float(t.timings["total_s"]) for t in ready])
        print_row("enqueue->ready", [e2e[t.tenant_id] for t in ready])
        names = [t.container_name for t in ready if t.container_name]
        if names:
            await asyncio.sleep(args.settle_s)
            memory = await container_memory_bytes(app, names)
            print(f"idle tenant container memory: median "
                  f"{statistics.median(memory) / 2**20:.1f} MiB, max "
                  f"{max(memory) / 2**20:.1f} MiB (after {args.settle_s:.0f}s)")
        files = [Path(t.endpoint.path) for t in ready if t.endpoint and t.endpoint.path]
        if files:  # an embedded engine: no container, the tenant is its file
            sizes = [f.stat().st_size for f in files]
            print(f"tenant file size: median {statistics.median(sizes) / 2**10:.0f} KiB")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"cloner process peak RSS: {peak_kib / 1024:.1f} MiB")
    for t in failed:
        print(f"FAILED {t.tenant_id}: {t.error}")


async def run(args: argparse.Namespace) -> None:
    """Provision, measure, print, clean up."""
    configure_logging("warning", "json")
    data_dir = Path(tempfile.mkdtemp(prefix="cloner-bench-"))
    settings = Settings(data_dir=data_dir, workers=args.concurrency, log_level="warning",
                        log_format="json")
    async with App.open(settings) as app:
        try:
            if get_engine(Engine(args.engine)).placement is Placement.CONTAINER:
                await app.runtime.ping()
            e2e, wall = await provision_all(app, args)
            await report(app, args, e2e, wall)
        finally:
            if not args.keep and get_engine(Engine(args.engine)).placement is Placement.CONTAINER:
                owned = await app.runtime.owned()
                await asyncio.gather(*(app.runtime.remove_container(c.name)
                                       for c in owned.containers))
                await asyncio.gather(*(app.runtime.remove_volume(v) for v in owned.volumes))
    if not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="postgres")
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1,
                        help="workers; 1 measures cold provisioning one at a time")
    parser.add_argument("--settle-s", type=float, default=5.0,
                        help="seconds to let tenants idle before measuring memory")
    parser.add_argument("--keep", action="store_true", help="keep the tenants afterwards")
    parser.add_argument("--prefix", default="bench",
                        help="tenant id prefix (containers are cloner-<prefix>-NNN)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
