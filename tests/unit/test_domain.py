"""Unit tests of cloner.domain: tenant ids, parsing, the state machine and value objects."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloner.domain import (
    RECREATABLE,
    RESTORABLE,
    CheckResult,
    Credentials,
    Engine,
    Industry,
    IsolationReport,
    RoleCredential,
    Status,
    check_transition,
    container_name,
    parse_engine,
    parse_industry,
    sql_identifier,
    validate_tenant_id,
    validate_version,
    volume_name,
)
from cloner.errors import InvalidInput, InvalidTransition

# Written out here rather than imported, so a change to the constant is caught.
TENANT_ID_REGEX = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")


# ----------------------------------------------------------------- tenant ids


@pytest.mark.parametrize(
    "value", ["abc", "acme-corp", "a1b", "a-1", "a" * 40, "x" + "-" * 38 + "y"]
)
def test_valid_tenant_ids_are_returned_unchanged(value: str) -> None:
    """A well-formed tenant id is returned as is."""
    assert validate_tenant_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "ab",  # 2 chars
        "a" * 41,  # 41 chars
        "Acme",  # uppercase
        "ACME",
        "1acme",  # leading digit
        "-acme",  # leading hyphen
        "acme-",  # trailing hyphen
        "acme_corp",  # underscore
        "acmé",  # unicode letter
        "\uff41cme",  # fullwidth unicode a
        "",  # empty
        "a'; drop",  # SQL injection
        "a'; DROP TABLE tenants; --",
        "acme corp",  # space
        "acme.corp",  # dot
        "abc\n",  # trailing newline ($ alone would accept it)
        "\nabc",
    ],
)
def test_invalid_tenant_ids_raise_invalid_input(value: str) -> None:
    """A malformed tenant id is refused with InvalidInput (exit code 2)."""
    with pytest.raises(InvalidInput) as info:
        validate_tenant_id(value)
    assert info.value.exit_code == 2
    assert "invalid tenant id" in str(info.value)


def test_invalid_tenant_id_message_is_one_line_even_for_control_characters() -> None:
    """The error for an id containing newlines stays a single line."""
    with pytest.raises(InvalidInput) as info:
        validate_tenant_id("evil\nid\r\n")
    assert "\n" not in str(info.value)
    assert "\r" not in str(info.value)


def test_invalid_tenant_id_message_is_truncated() -> None:
    """A huge bad id does not produce a huge error message."""
    with pytest.raises(InvalidInput) as info:
        validate_tenant_id("A" * 10_000)
    assert len(str(info.value)) < 300


@settings(max_examples=300, database=None, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.text(alphabet="abcxyz019-_A \n'é", max_size=45),
        st.from_regex(TENANT_ID_REGEX, fullmatch=True),
    )
)
def test_tenant_id_property_matches_regex_or_raises_invalid_input(value: str) -> None:
    """Any string is either a full regex match and returned, or raises InvalidInput."""
    if TENANT_ID_REGEX.fullmatch(value):
        assert validate_tenant_id(value) == value
    else:
        with pytest.raises(InvalidInput):
            validate_tenant_id(value)


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize("engine", list(Engine))
def test_parse_engine_accepts_every_engine_name(engine: Engine) -> None:
    """Every engine value parses back to its enum member."""
    assert parse_engine(engine.value) is engine


@pytest.mark.parametrize("value", ["oracle", "Postgres", "", "postgres "])
def test_parse_engine_refuses_unknown_names_listing_choices(value: str) -> None:
    """An unknown engine raises InvalidInput naming the valid choices."""
    with pytest.raises(InvalidInput) as info:
        parse_engine(value)
    message = str(info.value)
    assert "unknown engine" in message
    for engine in ("postgres", "mysql", "mongodb", "sqlite"):
        assert engine in message


@pytest.mark.parametrize("industry", list(Industry))
def test_parse_industry_accepts_every_industry_name(industry: Industry) -> None:
    """Every industry value parses back to its enum member."""
    assert parse_industry(industry.value) is industry


@pytest.mark.parametrize("value", ["retail", "NONE", "", "finance\n"])
def test_parse_industry_refuses_unknown_names_listing_choices(value: str) -> None:
    """An unknown industry raises InvalidInput naming the valid choices."""
    with pytest.raises(InvalidInput) as info:
        parse_industry(value)
    message = str(info.value)
    assert "unknown industry" in message
    for industry in ("technology", "healthcare", "finance", "none"):
        assert industry in message


@pytest.mark.parametrize("value", ["v1.0", "v1.1", "v10.20", "v999.0"])
def test_validate_version_accepts_vx_y(value: str) -> None:
    """Versions of the form vX.Y are accepted unchanged."""
    assert validate_version(value) == value


@pytest.mark.parametrize(
    "value", ["1.0", "v1", "v1.0.0", "latest", "", "V1.0", "v1.x", "v1000.0", "v1.0\n"]
)
def test_validate_version_refuses_other_shapes(value: str) -> None:
    """Anything that is not vX.Y raises InvalidInput."""
    with pytest.raises(InvalidInput, match="invalid template version"):
        validate_version(value)


# ------------------------------------------------------------ state machine


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.REQUESTED, Status.PROVISIONING),
        (Status.REQUESTED, Status.FAILED),
        (Status.PROVISIONING, Status.READY),
        (Status.PROVISIONING, Status.FAILED),
        (Status.READY, Status.DEGRADED),
        (Status.DEGRADED, Status.READY),
        (Status.READY, Status.DEPROVISIONING),
        (Status.DEGRADED, Status.DEPROVISIONING),
        (Status.DEPROVISIONING, Status.DEPROVISIONED),
        (Status.DEPROVISIONED, Status.PURGED),
        (Status.FAILED, Status.REQUESTED),
        (Status.PURGED, Status.REQUESTED),
    ],
)
def test_allowed_transitions_pass(current: Status, target: Status) -> None:
    """Transitions of the documented lifecycle are accepted."""
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.READY, Status.PROVISIONING),
        (Status.REQUESTED, Status.READY),
        (Status.READY, Status.REQUESTED),
        (Status.READY, Status.PURGED),
        (Status.FAILED, Status.READY),
        (Status.DEPROVISIONED, Status.READY),
        (Status.PURGED, Status.READY),
        (Status.PURGED, Status.PROVISIONING),
        (Status.DEGRADED, Status.PROVISIONING),
        (Status.READY, Status.READY),
    ],
)
def test_forbidden_transitions_raise_invalid_transition(current: Status, target: Status) -> None:
    """Transitions outside the lifecycle raise InvalidTransition naming both states."""
    with pytest.raises(InvalidTransition) as info:
        check_transition(current, target)
    assert current.value in str(info.value)
    assert target.value in str(info.value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("current", list(Status))
def test_only_recreatable_or_restorable_states_may_return_to_requested(current: Status) -> None:
    """A tenant re-enters `requested` exactly from the states where re-create or restore is."""
    if current in RECREATABLE | RESTORABLE:
        check_transition(current, Status.REQUESTED)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(current, Status.REQUESTED)


@pytest.mark.parametrize("current", list(Status))
def test_every_state_has_an_entry_in_the_state_machine(current: Status) -> None:
    """check_transition answers for every state with a domain error, never KeyError."""
    for target in Status:
        with contextlib.suppress(InvalidTransition):
            check_transition(current, target)


# ------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("tenant_id", "expected"),
    [("acme", "acme"), ("acme-corp", "acme_corp"), ("a-b-c", "a_b_c"), ("t1-2x", "t1_2x")],
)
def test_sql_identifier_replaces_hyphens(tenant_id: str, expected: str) -> None:
    """The SQL identifier is the tenant id with `-` turned into `_`."""
    assert sql_identifier(tenant_id) == expected


@pytest.mark.parametrize("bad", ['a"; drop', "Acme", "ab", 'x"y'])
def test_sql_identifier_refuses_invalid_ids(bad: str) -> None:
    """No SQL identifier is derived from an invalid tenant id."""
    with pytest.raises(InvalidInput):
        sql_identifier(bad)


def test_container_and_volume_names_are_deterministic() -> None:
    """Container and volume names derive from the tenant id alone."""
    assert container_name("acme-corp") == "cloner-acme-corp"
    assert volume_name("acme-corp") == "cloner-acme-corp-data"
    assert container_name("acme") != container_name("acme2")
    assert volume_name("acme") != container_name("acme")


# --------------------------------------------------------------- isolation


def test_empty_isolation_report_is_not_passed() -> None:
    """A report with no checks proves nothing and does not pass."""
    report = IsolationReport(())
    assert report.passed is False
    assert report.as_dict() == {"passed": False, "checks": []}


def test_isolation_report_passes_only_when_every_check_passes() -> None:
    """One failing check fails the whole report."""
    ok = CheckResult("own_db", True, "read/write ok")
    bad = CheckResult("neighbour", False, "reached other tenant")
    assert IsolationReport((ok,)).passed is True
    assert IsolationReport((ok, ok)).passed is True
    assert IsolationReport((ok, bad)).passed is False
    assert IsolationReport((bad,)).passed is False


def test_isolation_report_round_trips_through_dict() -> None:
    """from_dict(as_dict()) reproduces the report, and the dict has the documented shape."""
    report = IsolationReport(
        (CheckResult("own_db", True, "ok"), CheckResult("public", False, "PUBLIC can CONNECT"))
    )
    data = report.as_dict()
    assert data == {
        "passed": False,
        "checks": [
            {"name": "own_db", "passed": True, "detail": "ok"},
            {"name": "public", "passed": False, "detail": "PUBLIC can CONNECT"},
        ],
    }
    assert IsolationReport.from_dict(data) == report


def test_isolation_report_from_dict_without_checks_is_empty() -> None:
    """A stored report missing its checks loads as an empty, failing report."""
    report = IsolationReport.from_dict({"passed": True})
    assert report.checks == ()
    assert report.passed is False


# ------------------------------------------------------------- credentials


def test_role_credential_repr_hides_password() -> None:
    """repr() and str() of a RoleCredential show the user but never the password."""
    cred = RoleCredential("acme_app", "s3cr3t-Pa55word-xyz")
    for text in (repr(cred), str(cred), f"{cred!r}", repr([cred])):
        assert "s3cr3t-Pa55word-xyz" not in text
    assert "acme_app" in repr(cred)


def test_credentials_repr_hides_every_password() -> None:
    """repr() and str() of Credentials contain none of its passwords."""
    creds = Credentials(
        superuser=RoleCredential("postgres", "super-secret-000111"),
        bootstrap_password="bootstrap-secret-222333",
        roles={
            "owner": RoleCredential("acme_owner", "owner-secret-444555"),
            "app": RoleCredential("acme_app", "app-secret-666777"),
        },
    )
    for text in (repr(creds), str(creds), repr({"c": creds})):
        for secret in creds.all_secrets():
            assert secret not in text
    assert set(creds.all_secrets()) == {
        "super-secret-000111", "bootstrap-secret-222333", "owner-secret-444555",
        "app-secret-666777",
    }



def test_settings_refuse_heartbeat_not_shorter_than_lease(tmp_path: Path) -> None:
    """A heartbeat interval at or above the lease TTL is refused at startup."""
    from pydantic import ValidationError

    from cloner.settings import Settings

    with pytest.raises(ValidationError, match="must be shorter than lease_ttl_s"):
        Settings(data_dir=tmp_path, lease_ttl_s=10, heartbeat_interval_s=10)
