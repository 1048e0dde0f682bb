"""The Prometheus and Grafana files under deploy/ are well formed and use only real metrics.

Every metric name in an alert expression or a dashboard query must be one that
``cloner.metrics.Metrics()`` exports (with the sample suffixes Prometheus adds:
``_total`` for counters, ``_bucket``/``_sum``/``_count`` for histograms,
``_info`` for info metrics). When ``promtool`` is installed, it also checks
the configuration, the rules, their unit tests and the dashboard's PromQL.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloner.metrics import Metrics
from tests.conftest import IN_CI

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
    # /metrics may need CLONER_METRICS_TOKEN: the scrape sends it from a file beside the
    # config (an empty file sends nothing, for a daemon without a token).
    assert cloner["authorization"]["credentials_file"] == "secrets/metrics.token"


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
    """Failure ratio, backlog age, tenant down, isolation, backup, reconcile, orphans covered."""
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
    alert_reading("cloner_orphans > 0")


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
# CI installs promtool (scripts/bootstrap.sh, var/tools): there the checks run and never skip.
needs_promtool = pytest.mark.skipif(PROMTOOL is None and not IN_CI,
                                    reason="promtool is not installed")


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    assert PROMTOOL is not None, "CI=true but promtool is missing; scripts/bootstrap.sh installs it"
    proc = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _with_scrape_secret(config: Path, tmp_path: Path) -> Path:
    """A copy of ``config`` and its rule files with the scrape credentials file it names.

    promtool insists the file exists; it is deployment state (generated by compose's
    secrets service, or written by the operator), not part of the repository.
    """
    copy = tmp_path / "prometheus"
    copy.mkdir()
    for source in config.parent.glob("*.yml"):
        shutil.copy(source, copy / source.name)
    (copy / "secrets").mkdir()
    (copy / "secrets" / "metrics.token").write_text("")
    return copy / config.name


@needs_promtool
def test_promtool_accepts_config_rules_and_rule_unit_tests(tmp_path: Path) -> None:
    """promtool checks prometheus.yml and alerts.yml and passes alerts_test.yml."""
    config = _with_scrape_secret(PROMETHEUS / "prometheus.yml", tmp_path)
    assert "SUCCESS" in _promtool("check", "config", config.name, cwd=config.parent)
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


# ------------------------------------------------------------------ compose and image

COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
GRAFANA_PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
#: Absolute host paths compose may bind-mount: they belong to the host, not the repo.
HOST_PATHS = {"/var/run/docker.sock"}
#: Test value of every ${VAR} the compose file takes from the environment.
COMPOSE_ENV = {"DOCKER_GID": "999"}


def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def service(name: str) -> dict[str, Any]:
    """One service of docker-compose.yml."""
    services: dict[str, Any] = compose()["services"]
    assert name in services, f"docker-compose.yml has no {name} service"
    return dict(services[name])


def bind_mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path → host path of a service's bind mounts (named volumes left out)."""
    mounts: dict[str, str] = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts[volume["target"]] = volume["source"]
            continue
        source, target, *_mode = str(volume).split(":")
        if source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def repo_path_in(svc: dict[str, Any], container_path: str) -> Path:
    """The repository file or directory a service sees at ``container_path``."""
    for target, source in sorted(bind_mounts(svc).items(), key=lambda m: -len(m[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            relative = container_path[len(target):].lstrip("/")
            return (REPO / source / relative).resolve()
    raise AssertionError(f"{container_path} is not bind-mounted from the repository")


def flag(svc: dict[str, Any], name: str) -> str:
    """The value of ``--name=value`` in a service's command."""
    command = svc.get("command", [])
    values = [str(arg).split("=", 1)[1] for arg in command if str(arg).startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times in {command}"
    return values[0]


def on_host_network(*names: str) -> bool:
    """Whether all these services share the host's network namespace."""
    return all(service(name).get("network_mode") == "host" for name in names)


def cloner_listen() -> str:
    """CLONER_HTTP_LISTEN of the compose cloner service."""
    environment = service("cloner")["environment"]
    if isinstance(environment, list):
        environment = dict(str(e).split("=", 1) for e in environment)
    return str(environment["CLONER_HTTP_LISTEN"])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines if line and not line.startswith("#")
    ]


def test_compose_build_context_and_bind_mounts_exist_in_the_repo() -> None:
    """Build context, Dockerfile and every relative bind mount exist; volumes are declared."""
    document = compose()
    declared_volumes = set(document.get("volumes") or {})

    cloner = service("cloner")
    context = REPO / cloner["build"]["context"]
    assert context.resolve() == REPO
    assert (context / cloner["build"]["dockerfile"]).resolve() == DOCKERFILE
    for name, svc in document["services"].items():
        for target, source in bind_mounts(svc).items():
            if source.startswith("/"):
                assert source in HOST_PATHS, f"{name}: unexpected host path {source}"
            else:
                assert (REPO / source).exists(), f"{name}: {source} (for {target}) is missing"
        for volume in svc.get("volumes", []):
            source = str(volume).split(":", 1)[0] if not isinstance(volume, dict) else ""
            if source and not source.startswith((".", "/", "~")):
                assert source in declared_volumes, f"{name}: volume {source} is not declared"


def test_compose_daemon_has_the_docker_socket_and_its_data_volume() -> None:
    """The cloner service mounts the Docker socket and keeps its data dir on a named volume."""
    cloner = service("cloner")
    environment = cloner["environment"]

    assert bind_mounts(cloner).get("/var/run/docker.sock") == "/var/run/docker.sock"
    data_dir = environment["CLONER_DATA_DIR"]
    assert any(str(v).split(":")[1] == data_dir and not str(v).startswith((".", "/"))
               for v in cloner["volumes"]), "CLONER_DATA_DIR is not on a named volume"
    assert cloner["build"]["args"]["DOCKER_GID"]


def test_compose_services_listen_on_loopback_only() -> None:
    """API/metrics, Prometheus and Grafana are reachable from this host only."""
    cloner = service("cloner")
    prometheus = service("prometheus")
    grafana = service("grafana")

    if on_host_network("cloner"):
        assert cloner_listen().rpartition(":")[0] == "127.0.0.1"
        # Tenants are published on the host's loopback; host networking is what lets
        # the daemon reach them there.
        assert cloner["environment"]["CLONER_BIND_HOST"] == "127.0.0.1"
    for svc in (cloner, prometheus, grafana):
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port
    if on_host_network("prometheus"):
        assert flag(prometheus, "--web.listen-address").startswith("127.0.0.1:")
    if on_host_network("grafana"):
        assert grafana["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def compose_prometheus_config() -> tuple[Path, dict[str, Any]]:
    """The repository file compose's Prometheus loads as its configuration, parsed."""
    path = repo_path_in(service("prometheus"), flag(service("prometheus"), "--config.file"))
    return path, yaml.safe_load(path.read_text())


def test_compose_prometheus_scrapes_the_cloner_service_and_loads_the_alerts() -> None:
    """The scrape target is where the cloner service listens, seen from Prometheus' network."""
    prometheus = service("prometheus")
    _path, config = compose_prometheus_config()

    if on_host_network("prometheus", "cloner"):
        expected = cloner_listen()  # one network namespace: the host's
    else:
        expected = f"cloner:{cloner_listen().rpartition(':')[2]}"  # the compose service name
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for static in jobs["cloner"]["static_configs"] for t in static["targets"]]
    assert targets == [expected]
    for rule_file in config["rule_files"]:
        in_container = str(Path(flag(prometheus, "--config.file")).parent / rule_file)
        assert repo_path_in(prometheus, in_container) == (PROMETHEUS / "alerts.yml").resolve()


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    """The datasource is compose's Prometheus; the dashboard provider reads the dashboard."""
    grafana = service("grafana")
    datasources = yaml.safe_load(
        repo_path_in(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    providers = yaml.safe_load(
        repo_path_in(grafana, "/etc/grafana/provisioning/dashboards/cloner.yml").read_text()
    )["providers"]

    (source,) = datasources
    assert source["type"] == "prometheus" and source["isDefault"] is True
    if on_host_network("grafana", "prometheus"):
        assert source["url"] == f"http://{flag(service('prometheus'), '--web.listen-address')}"
    else:
        assert source["url"].startswith("http://prometheus:")
    (provider,) = providers
    assert provider["type"] == "file"
    dashboards = repo_path_in(grafana, provider["options"]["path"] + "/cloner-dashboard.json")
    assert dashboards == DASHBOARD.resolve()
    home = grafana["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert repo_path_in(grafana, home) == DASHBOARD.resolve()
    # Every provisioning file in the repository is one compose mounts.
    for file in GRAFANA_PROVISIONING.rglob("*.yml"):
        relative = file.relative_to(GRAFANA_PROVISIONING).as_posix()
        assert repo_path_in(grafana, f"/etc/grafana/provisioning/{relative}") == file.resolve()


def _named_volume_mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path → named volume of a service's named-volume mounts."""
    mounts: dict[str, str] = {}
    for volume in svc.get("volumes", []):
        source, target, *_mode = str(volume).split(":")
        if not source.startswith((".", "/", "~")):
            mounts[target] = source
    return mounts


def _generated_secret(svc: dict[str, Any], container_path: str) -> tuple[str, str]:
    """(volume, file name) a service reads at ``container_path`` from the secrets service."""
    path = Path(container_path)
    volume = _named_volume_mounts(svc).get(str(path.parent))
    assert volume is not None, f"{path.parent} is not a named volume"
    generator = service("secrets")
    entrypoint = generator["entrypoint"]
    assert repo_path_in(generator, entrypoint[1]) == (REPO / "deploy" / "init_secrets.py")
    assert _named_volume_mounts(generator).get(entrypoint[2]) == volume, (
        f"{volume} is not where the secrets service writes"
    )
    assert path.name in _init_secrets_module().FILES
    return volume, path.name


def _init_secrets_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cloner_init_secrets",
                                                  REPO / "deploy" / "init_secrets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _waits_for_secrets(svc: dict[str, Any]) -> bool:
    depends = svc.get("depends_on") or {}
    return isinstance(depends, dict) and (
        depends.get("secrets", {}).get("condition") == "service_completed_successfully"
    )


def test_compose_metrics_token_is_generated_and_shared_by_daemon_and_prometheus() -> None:
    """The daemon's CLONER_METRICS_TOKEN and Prometheus' scrape credentials: one generated file."""
    cloner, prometheus = service("cloner"), service("prometheus")
    _path, config = compose_prometheus_config()
    job = {j["job_name"]: j for j in config["scrape_configs"]}["cloner"]

    authorization = job["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer"
    # Relative paths in prometheus.yml are resolved against the config file's directory.
    config_dir = Path(flag(prometheus, "--config.file")).parent
    scrape_secret = _generated_secret(
        prometheus, str(config_dir / authorization["credentials_file"])
    )
    shell = " ".join(str(part) for part in cloner["entrypoint"])
    match = re.search(r'CLONER_METRICS_TOKEN="\$\$\(cat ([^)]+)\)"', shell)
    assert match, f"the cloner service does not set CLONER_METRICS_TOKEN from a file: {shell}"
    assert "exec cloner" in shell
    assert _generated_secret(cloner, match.group(1)) == scrape_secret
    assert _waits_for_secrets(cloner) and _waits_for_secrets(prometheus)


def test_compose_grafana_admin_password_is_generated_not_admin() -> None:
    """Grafana reads its admin password from the generated file; no `admin` default anywhere."""
    grafana = service("grafana")
    environment = grafana["environment"]

    assert "GF_SECURITY_ADMIN_PASSWORD" not in environment
    _generated_secret(grafana, environment["GF_SECURITY_ADMIN_PASSWORD__FILE"])
    assert _waits_for_secrets(grafana)
    assert ":-admin}" not in COMPOSE_FILE.read_text()


def test_init_secrets_generates_strong_values_once(tmp_path: Path) -> None:
    """Each secret is 256 bits, distinct, and a second run keeps the first values."""
    module = _init_secrets_module()
    target = tmp_path / "secrets"

    assert sorted(module.ensure_secrets(target)) == sorted(module.FILES)
    first = {name: (target / name).read_text() for name in module.FILES}
    assert module.ensure_secrets(target) == []
    assert {name: (target / name).read_text() for name in module.FILES} == first
    assert all(len(value) >= 43 for value in first.values())  # token_urlsafe(32)
    assert len(set(first.values())) == len(first)
    (target / "metrics.token").write_text("")  # an emptied file is regenerated, not kept
    assert module.ensure_secrets(target) == ["metrics.token"]
    assert len((target / "metrics.token").read_text()) >= 43


def test_dockerfile_takes_the_base_as_argument_and_runs_as_a_non_root_user() -> None:
    """ARG BASE before every FROM ${BASE}; DOCKER_GID argument; the last USER is not root."""
    instructions = dockerfile_instructions()
    first_from = next(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    froms = [args for op, args in instructions if op == "FROM"]
    users = [args for op, args in instructions if op == "USER"]

    assert any(op == "ARG" and args.startswith("BASE") for op, args in instructions[:first_from])
    assert all(args.split()[0] == "${BASE}" for args in froms), froms
    assert any(op == "ARG" and args.startswith("DOCKER_GID") for op, args in instructions)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert ("ENTRYPOINT", '["cloner"]') in instructions
    assert ("CMD", '["serve"]') in instructions
    healthchecks = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "healthcheck.py" in healthchecks[0]


def test_dockerfile_copies_only_what_the_dockerignore_lets_through() -> None:
    """Every COPY source exists (the wheelhouse is built) and is allowed by .dockerignore."""
    allowed = {
        line[1:].strip("/") for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    sources = [
        args.split()[:-1] for op, args in dockerfile_instructions()
        if op == "COPY" and not args.startswith("--from")
    ]

    assert sources
    for source in (s.strip("/") for group in sources for s in group):
        assert source in allowed, f"COPY {source} is excluded by .dockerignore"
        if source != "deploy/wheelhouse":  # made by deploy/build-image.sh
            assert (REPO / source).exists(), source
    assert "deploy/wheelhouse/" in (REPO / ".gitignore").read_text()


def _healthcheck_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("cloner_healthcheck",
                                                  REPO / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("listen", "url"), [
    ("127.0.0.1:8080", "http://127.0.0.1:8080/healthz"),
    ("0.0.0.0:8080", "http://127.0.0.1:8080/healthz"),
    (":9000", "http://127.0.0.1:9000/healthz"),
    ("[::]:8080", "http://[::1]:8080/healthz"),
    ("10.1.2.3:8081", "http://10.1.2.3:8081/healthz"),
])
def test_healthcheck_probes_the_listen_address_wildcards_on_loopback(
    listen: str, url: str,
) -> None:
    """The image's HEALTHCHECK URL follows CLONER_HTTP_LISTEN; wildcards map to loopback."""
    assert _healthcheck_module().healthz_url(listen) == url


def _compose_command() -> list[str] | None:
    """``docker compose`` or ``docker-compose``, whichever answers; None if neither."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        proc = subprocess.run([*command, "version"], capture_output=True, text=True,
                              timeout=30, check=False)
        if proc.returncode == 0:
            return command
    return None


def test_compose_file_is_accepted_by_docker_compose() -> None:
    """`docker compose config -q` (or docker-compose) accepts the file, when installed."""
    command = _compose_command()
    if command is None:
        if IN_CI:  # scripts/bootstrap.sh installs it: missing in CI is a setup bug
            pytest.fail("neither `docker compose` nor `docker-compose` is installed")
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    proc = subprocess.run(
        [*command, "--file", str(COMPOSE_FILE), "config", "-q"], cwd=REPO,
        env={**os.environ, **COMPOSE_ENV},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_accepts_the_prometheus_config_compose_loads(tmp_path: Path) -> None:
    """The configuration compose mounts for Prometheus passes promtool too."""
    path, _config = compose_prometheus_config()
    config = _with_scrape_secret(path, tmp_path)
    assert "SUCCESS" in _promtool("check", "config", config.name, cwd=config.parent)
