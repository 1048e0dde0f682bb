"""The Prometheus and Grafana files under deploy/ are well formed and use only real metrics.

Every metric name in an alert expression or a dashboard query must be one that
``cloner.metrics.Metrics()`` exports (with the sample suffixes Prometheus adds:
``_total`` for counters, ``_bucket``/``_sum``/``_count`` for histograms,
``_info`` for info metrics). When ``promtool`` is installed, it also checks
the configuration, the rules, their unit tests and the dashboard's PromQL.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloner.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "cloner-dashboard.json"
DURATION = re.compile(r"^(0|(\d+(ms|s|m|h|d|w|y))+)$")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_METRIC = re.compile(r"(?<![\w:$])(cloner_[A-Za-z0-9_:]*)")


def exported_metric_names() -> set[str]:
    """Sample names a scrape of a fresh ``Metrics`` registry can contain."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
        elif family.type == "info":
            names.add(f"{family.name}_info")
        else:
            names.add(family.name)
    return names


def referenced_metrics(expr: str) -> set[str]:
    """``cloner_*`` names used as metrics in a PromQL expression (string literals ignored)."""
    return set(_METRIC.findall(_STRING.sub('""', expr)))


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/alerts.yml."""
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, rows and the panels nested in them included."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def dashboard_exprs() -> list[str]:
    """The PromQL of every dashboard target."""
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


# ------------------------------------------------------------------------- helpers


def test_exported_names_follow_prometheus_suffix_rules() -> None:
    """The oracle itself: counters end in _total, histograms have _bucket, info has _info."""
    names = exported_metric_names()

    assert "cloner_provisions_total" in names
    assert "cloner_provision_duration_seconds_bucket" in names
    assert "cloner_build_info" in names
    assert "cloner_tenant_up" in names
    assert "cloner_provisions" not in names


def test_referenced_metrics_ignore_label_values_and_functions() -> None:
    """Metric extraction sees metric names only, not quoted values or label names."""
    expr = ('sum by (le, step) (rate(cloner_provision_duration_seconds_bucket'
            '{step="cloner_fake"}[5m])) / on() group_left cloner_tenant_up')

    assert referenced_metrics(expr) == {"cloner_provision_duration_seconds_bucket",
                                        "cloner_tenant_up"}


# ---------------------------------------------------------------------- prometheus


def test_prometheus_scrapes_the_daemon_and_loads_the_alerts() -> None:
    """prometheus.yml scrapes 127.0.0.1:8080/metrics and loads alerts.yml beside it."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    cloner = jobs["cloner"]
    assert cloner.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for static in cloner["static_configs"] for t in static["targets"]]
    assert targets == ["127.0.0.1:8080"]
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS / config["rule_files"][0]).is_file()


def test_every_alert_has_expr_for_severity_and_annotations() -> None:
    """Each rule is an alert with an expression, a duration, a severity and both annotations."""
    rules = alert_rules()

    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        name = rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip(), name
        assert DURATION.match(str(rule["for"])), (name, rule["for"])
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_alert_expressions_use_only_exported_metrics() -> None:
    """Every metric an alert reads is exported by cloner.metrics.Metrics."""
    exported = exported_metric_names()

    for rule in alert_rules():
        used = referenced_metrics(rule["expr"])
        assert used, f"{rule['alert']} reads no cloner metric"
        assert used <= exported, f"{rule['alert']}: unknown {sorted(used - exported)}"


def test_the_required_alerts_exist() -> None:
    """Failure ratio, backlog age, tenant down, isolation, backup and reconcile are covered."""
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in alert_rules()}

    def alert_reading(*needles: str) -> str:
        found = [name for name, expr in exprs.items() if all(n in expr for n in needles)]
        assert found, f"no alert reads {needles}"
        return found[0]

    alert_reading('cloner_provisions_total{outcome="failure"}', "/")
    alert_reading("cloner_queue_oldest_age_seconds")
    alert_reading("cloner_tenant_up == 0")
    alert_reading('cloner_isolation_checks_total{outcome="failed"}', "increase(")
    alert_reading('cloner_backups_total{outcome="failure"}')
    alert_reading("time() - cloner_reconcile_last_success_timestamp_seconds >")


# ------------------------------------------------------------------------- grafana


def test_dashboard_queries_use_only_exported_metrics() -> None:
    """Every metric in every dashboard target is exported by cloner.metrics.Metrics."""
    exported = exported_metric_names()
    exprs = dashboard_exprs()

    assert exprs
    for expr in exprs:
        used = referenced_metrics(expr)
        assert used, f"target reads no cloner metric: {expr}"
        assert used <= exported, f"unknown {sorted(used - exported)} in {expr}"


def test_dashboard_covers_the_operational_questions() -> None:
    """Provision p50/p95 by step, outcomes, queue, tenants, up/memory, reconcile, HTTP rate."""
    exprs = [" ".join(e.split()) for e in dashboard_exprs()]
    joined = "\n".join(exprs)

    for quantile in ("0.5", "0.95"):
        assert any(
            e.startswith(f"histogram_quantile({quantile}, sum by (le, step)")
            and "cloner_provision_duration_seconds_bucket" in e for e in exprs
        ), quantile
    for metric in ("cloner_provisions_total", "cloner_queue_depth",
                   "cloner_queue_oldest_age_seconds", "cloner_tenants", "cloner_tenant_up",
                   "cloner_tenant_memory_bytes", "cloner_reconcile_actions_total",
                   "cloner_http_requests_total"):
        assert metric in joined, metric
    assert "sum by (state) (cloner_tenants" in joined
    assert "rate(cloner_http_requests_total" in joined


def test_dashboard_panels_are_well_formed() -> None:
    """Unique ids, a title, a place on the 24-column grid, and targets with refId + datasource."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard_panels()

    assert dashboard["title"] and dashboard["uid"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "job"}
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        grid = panel["gridPos"]
        assert panel["title"], panel["id"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


# ------------------------------------------------------------------------- promtool


PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    assert PROMTOOL is not None
    proc = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_promtool
def test_promtool_accepts_config_rules_and_rule_unit_tests() -> None:
    """promtool checks prometheus.yml and alerts.yml and passes alerts_test.yml."""
    assert "SUCCESS" in _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in _promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in _promtool("test", "rules", "alerts_test.yml")


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each dashboard query (Grafana variables filled in) is valid PromQL for promtool."""
    rules = [
        {"record": f"dashboard:query_{i}",
         "expr": expr.replace("$__rate_interval", "1m").replace("$__range", "1h")
                     .replace("$job", ".+")}
        for i, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    assert f"SUCCESS: {len(rules)} rules found" in _promtool("check", "rules", str(path),
                                                            cwd=tmp_path)
