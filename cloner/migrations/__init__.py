"""Fleet schema migrations (``cloner migrate``): plan, per-tenant runner, rollout, status.

- ``plan``: the path of steps per tenant (multi-step, up or down) and the rollout plan.
- ``runner``: one tenant: mark ``migrating``, check applied checksums, back up,
  apply steps, roll back (down steps, or the backup) on failure, back to ``ready``.
- ``rollout``: canary tenants first, then the rest with bounded concurrency,
  halting once failures exceed the allowed number.
- ``status``: ``migrate status`` and the metrics derived from the registry.

Kept import-light on purpose: engines import ``cloner.migrations.errors``.
"""
