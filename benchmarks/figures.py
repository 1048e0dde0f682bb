"""Percentiles as the benchmarks report them (imported by the scripts beside it)."""

from __future__ import annotations


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def print_row(name: str, values: list[float], *, width: int = 22, count: bool = False) -> None:
    """One line of a table: [count,] p50, p95, max."""
    counted = f"{len(values):>4}" if count else ""
    print(f"{name:<{width}}{counted}{percentile(values, 50):>9.3f}"
          f"{percentile(values, 95):>9.3f}{max(values):>9.3f}")
