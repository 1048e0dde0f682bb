"""Unit tests (fakes): the cross-tenant sample and endpoint vouching (who is a neighbour)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cloner.daemon.health import mark_degraded
from cloner.domain import Engine, container_name
from cloner.engines.checks import (
    NeighbourFinding,
    neighbours_refuse,
    pg_verifier_accepts,
)
from cloner.engines.mysql import account_problems, native_password_hash
from cloner.errors import EndpointNotVouched
from cloner.pipeline.verify import sample_neighbours
from cloner.secrets import scram_sha256_verifier
from cloner.testing import FakeEngine
from tests.unit.fleet import open_fleet

IDS = [f"nb-{i:02d}" for i in range(12)]


async def test_sample_is_bounded_vouched_only_and_rotates(
    tmp_path: Path, engine: FakeEngine,
) -> None:
    """At most CLONER_ISOLATION_SAMPLE neighbours per proof, READY and vouched ones only,
    a bounded number of runtime inspects, and successive intervals cover the whole fleet."""
    async with open_fleet(tmp_path, engine, isolation_sample=3) as fleet:
        for tenant_id in IDS:
            await fleet.ready(tenant_id)
        stopped = fleet.runtime.containers[container_name("nb-03")]
        stopped.status, stopped.host_port = "exited", None  # its port is free for anyone
        moved = fleet.runtime.containers[container_name("nb-07")]
        moved.host_port = 1  # publishes another port than the registry's endpoint
        assert await mark_degraded(fleet.app, await fleet.tenant("nb-05"), "test")
        services = fleet.app.services
        interval = fleet.app.settings.isolation_interval_s
        vouched = set(IDS) - {"nb-00", "nb-03", "nb-05", "nb-07"}

        seen: set[str] = set()
        skipped: set[str] = set()
        rounds = math.ceil((len(IDS) - 1) / 3) + 1
        for k in range(rounds):
            before = sum(1 for call in fleet.runtime.calls if call[0] == "inspect")
            sample = await sample_neighbours(services, Engine.POSTGRES, engine, "nb-00",
                                             at=k * interval)
            inspects = sum(1 for call in fleet.runtime.calls if call[0] == "inspect") - before
            assert len(sample.neighbours) == 3
            assert inspects <= 2 * 3
            assert sample.candidates == len(IDS) - 2  # READY others: not nb-00, not nb-05
            for neighbour in sample.neighbours:
                assert neighbour.target is not None and neighbour.target.guard is not None
            seen |= {n.tenant_id for n in sample.neighbours}
            skipped |= {tenant_id for tenant_id, _why in sample.skipped}

        assert seen == vouched
        assert skipped == {"nb-03", "nb-07"}


async def test_guard_refuses_a_stopped_or_moved_container(
    tmp_path: Path, engine: FakeEngine,
) -> None:
    """The endpoint guard names why a stale endpoint is not the tenant's own any more."""
    async with open_fleet(tmp_path, engine) as fleet:
        tenant = await fleet.ready("acme")
        _driver, target = await fleet.app.services.target(tenant)
        await target.vouch()  # running, same id, same port: vouched for

        container = fleet.runtime.containers[container_name("acme")]
        container.status, container.host_port = "exited", None
        with pytest.raises(EndpointNotVouched, match="exited"):
            await target.vouch()

        container.status, container.host_port = "running", tenant.endpoint.port + 1  # type: ignore[union-attr]
        with pytest.raises(EndpointNotVouched, match="publishes"):
            await target.vouch()

        container.host_port = tenant.endpoint.port  # type: ignore[union-attr]
        container.id = "0" * 64  # a container recreated behind the registry's back
        with pytest.raises(EndpointNotVouched, match="registry knows"):
            await target.vouch()


async def test_cross_tenant_check_fails_on_any_problem_and_names_the_sample(
    tmp_path: Path, engine: FakeEngine,
) -> None:
    """neighbours_refuse passes only when no neighbour reports a problem; its detail names them."""
    async with open_fleet(tmp_path, engine) as fleet:
        for tenant_id in ("acme", "beta", "gamma"):
            await fleet.ready(tenant_id)
        sample = await sample_neighbours(fleet.app.services, Engine.POSTGRES, engine, "acme")
        _driver, target = await fleet.app.services.target(await fleet.tenant("acme"))

        async def clean(_t: object, _n: object) -> NeighbourFinding:
            return NeighbourFinding(throwaway_refused=3)

        ok = await neighbours_refuse(target, sample.neighbours, clean, auth="scram only")
        assert ok.passed
        assert "beta" in ok.detail and "gamma" in ok.detail and "6 throwaway" in ok.detail

        async def one_bad(_t: object, n: object) -> NeighbourFinding:
            bad = getattr(n, "tenant_id", "") == "gamma"
            return NeighbourFinding(("has a role named acme_owner",) if bad else ())

        failed = await neighbours_refuse(target, sample.neighbours, one_bad, auth="scram only")
        assert not failed.passed
        assert failed.detail == "gamma: has a role named acme_owner"


async def test_stored_verifier_comparison_needs_no_server() -> None:
    """A SCRAM verifier accepts exactly its own password; non-SCRAM storage is a problem."""
    verifier = scram_sha256_verifier("right-password")
    assert await pg_verifier_accepts(verifier, "right-password") is not None
    assert await pg_verifier_accepts(verifier, "another-password") is None
    assert await pg_verifier_accepts(None, "anything") is None
    assert await pg_verifier_accepts("md5" + "0" * 32, "anything") is not None
    huge = verifier.replace("SCRAM-SHA-256$4096:", "SCRAM-SHA-256$999999999:")
    assert "iterations" in (await pg_verifier_accepts(huge, "right-password") or "")


def test_mariadb_account_rules() -> None:
    """A neighbour's accounts: foreign names, anonymous, unhashed plugins and our root hash fail."""
    clean = [
        ("root", "%", json.dumps({"plugin": "mysql_native_password",
                                  "authentication_string": native_password_hash("theirs")})),
        ("mariadb.sys", "localhost", json.dumps({"plugin": "mysql_native_password",
                                                 "authentication_string": "",
                                                 "account_locked": True})),
        ("mysql", "localhost", json.dumps({"plugin": "unix_socket"})),
        ("nb_app", "172.17.0.1", json.dumps({"plugin": "mysql_native_password",
                                             "authentication_string": "*ABC"})),
    ]
    assert account_problems(clean, ["acme_owner", "acme_app"], "mine") == []
    bad = [
        *clean,
        ("acme_app", "%", json.dumps({"authentication_string": "*ABC"})),
        ("", "%", json.dumps({})),
        ("x", "%", json.dumps({"plugin": "pam"})),
        ("y", "%", json.dumps({"plugin": "unix_socket"})),
        ("z", "%", json.dumps({"plugin": "mysql_native_password", "authentication_string": ""})),
        ("root", "localhost", json.dumps({"plugin": "mysql_native_password",
                                          "authentication_string": native_password_hash("mine")})),
    ]
    problems = account_problems(bad, ["acme_owner", "acme_app"], "mine")
    assert problems == [
        "has an account named acme_app@%",
        "has an anonymous account @%",
        "x@% authenticates with pam",
        "y@% authenticates with unix_socket",
        "z@% has no password",
        "root@localhost accepts this tenant's root password",
    ]
