"""Unit tests of cloner.logging: secret redaction, in strings and in rendered JSON logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from cloner.logging import REDACTED, REDACTOR, Redactor, configure_logging, get_logger
from cloner.secrets import generate_password

# ---------------------------------------------------------------- Redactor


def test_registered_values_are_replaced() -> None:
    """Every occurrence of a registered secret is replaced by ***."""
    redactor = Redactor()
    redactor.add(["s3cret-value-1234", "other-secret-5678"])
    text = redactor.redact("a s3cret-value-1234 b s3cret-value-1234 c other-secret-5678")
    assert text == f"a {REDACTED} b {REDACTED} c {REDACTED}"


def test_short_values_are_not_registered() -> None:
    """Values under 8 characters are ignored, so common words are never blanked out."""
    redactor = Redactor()
    redactor.add(["a", "", "ready"])
    assert redactor.redact("tenant acme is ready") == "tenant acme is ready"


def test_text_without_secrets_is_unchanged() -> None:
    """Ordinary log text passes through untouched."""
    text = "tenant acme-corp provisioned on 127.0.0.1:49153 in 1.9s"
    assert Redactor().redact(text) == text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("connect password=xyz host=db", "xyz"),
        ("PASSWORD: hunter2", "hunter2"),
        ('token="abc def ghi"', "abc def ghi"),
        ("dsn postgresql://acme_app:pw4711@127.0.0.1:5432/acme", "pw4711"),
        ("mysql+aiomysql://root:toor!x@h/db", "toor!x"),
        ("ALTER ROLE acme_app PASSWORD 'Sup3r-Secret' VALID UNTIL 'infinity'", "Sup3r-Secret"),
        ("ALTER ROLE r PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$c3Q=:c2s='", "c2FsdA=="),
        ("stored SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy", "c3RvcmVk"),
    ],
)
def test_secret_patterns_are_redacted(text: str, secret: str) -> None:
    """password=, DSN userinfo, PASSWORD '...' and SCRAM verifiers lose their secret part."""
    redacted = Redactor().redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_dsn_redaction_keeps_user_and_host() -> None:
    """Only the password of a DSN is hidden; user, host and database stay readable."""
    redacted = Redactor().redact("postgresql://u:pw@h/db")
    assert redacted == f"postgresql://u:{REDACTED}@h/db"


def test_redactor_processor_redacts_strings_and_exceptions() -> None:
    """As a structlog processor it redacts string values and exception values."""
    redactor = Redactor()
    redactor.add(["processor-secret-42"])
    event = {
        "event": "failed with processor-secret-42",
        "error": RuntimeError("auth processor-secret-42 refused"),
        "port": 5432,
    }
    out = redactor(None, "info", event)
    assert out["event"] == f"failed with {REDACTED}"
    assert out["error"] == f"RuntimeError: auth {REDACTED} refused"
    assert out["port"] == 5432


# ----------------------------------------------------- configured logging


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """JSON logging into a buffer; structlog and the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def _raise(exc: Exception) -> None:
    raise exc


def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_log_redacts_registered_secret_in_values_and_exceptions(
    log_stream: io.StringIO,
) -> None:
    """A registered secret in a field or an exception message is rendered as ***."""
    configure_logging(level="info", fmt="json", stream=log_stream)
    secret = generate_password()
    REDACTOR.add([secret])
    log = get_logger("cloner.test")
    log.info("tenant_ready", detail=f"app login uses {secret}", tenant_id="acme")
    try:
        _raise(RuntimeError(f"authentication failed for {secret}"))
    except RuntimeError:
        log.error("step_failed", exc_info=True)
    log.warning("step_retry", err=ValueError(f"bad {secret}"))

    output = log_stream.getvalue()
    assert secret not in output
    events = _events(log_stream)
    assert [e["event"] for e in events] == ["tenant_ready", "step_failed", "step_retry"]
    assert events[0]["detail"] == f"app login uses {REDACTED}"
    assert events[0]["tenant_id"] == "acme"
    assert events[0]["level"] == "info"
    assert events[1]["error"] == f"RuntimeError: authentication failed for {REDACTED}"
    assert events[2]["err"] == f"ValueError: bad {REDACTED}"


def test_debug_tracebacks_are_redacted(log_stream: io.StringIO) -> None:
    """At debug level the full traceback is logged, with the secret redacted."""
    configure_logging(level="debug", fmt="json", stream=log_stream)
    secret = generate_password()
    REDACTOR.add([secret])
    try:
        _raise(RuntimeError(f"connect failed: postgresql://u:{secret}@h/db"))
    except RuntimeError:
        get_logger("cloner.test").exception("step_failed")
    output = log_stream.getvalue()
    assert secret not in output
    (event,) = _events(log_stream)
    assert "Traceback" in event["exception"]
    assert REDACTED in event["exception"]


def test_stdlib_loggers_are_routed_and_redacted(log_stream: io.StringIO) -> None:
    """A stdlib logger (uvicorn, asyncio) goes through the same redacting JSON renderer."""
    configure_logging(level="info", fmt="json", stream=log_stream)
    logging.getLogger("uvicorn.error").warning("dsn postgresql://u:topsecretpw@h/db")
    output = log_stream.getvalue()
    assert "topsecretpw" not in output
    (event,) = _events(log_stream)
    assert event["event"] == f"dsn postgresql://u:{REDACTED}@h/db"
    assert event["logger"] == "uvicorn.error"


def test_level_filter_drops_debug_events(log_stream: io.StringIO) -> None:
    """At info level, debug events are not rendered."""
    configure_logging(level="info", fmt="json", stream=log_stream)
    log = get_logger("cloner.test")
    log.debug("noisy")
    log.info("useful")
    assert [e["event"] for e in _events(log_stream)] == ["useful"]


# ---------------------------------------------------------------- nested values (L12, L11)


def test_nested_values_are_redacted() -> None:
    """L12: secrets inside dicts, lists, tuples and sets are redacted at any depth."""
    redactor = Redactor()
    secret, other = generate_password(), "not url safe secret!"
    redactor.add([secret, other])
    event: dict[str, Any] = {
        "event": "x", "count": 3, "ok": True, "none": None,
        "detail": {"roles": [{"password": secret}], "dsn": f"postgresql://u:{secret}@h/db"},
        "args": (f"pw {secret}", ["deeper", {"k": other}]),
        "tags": {secret},
    }
    out = redactor(None, "info", event)
    rendered = json.dumps(out, default=str)
    assert secret not in rendered and other not in rendered
    assert out["count"] == 3 and out["ok"] is True and out["none"] is None
    assert out["detail"]["roles"] == [{"password": REDACTED}]
    assert out["args"][0] == f"pw {REDACTED}"
    assert isinstance(out["args"], tuple)


def test_objects_are_logged_as_redacted_text() -> None:
    """An arbitrary object (whose repr could hold a secret) is rendered as redacted str."""
    redactor = Redactor()
    secret = generate_password()
    redactor.add([secret])

    class Holder:
        def __str__(self) -> str:
            return f"Holder({secret})"

    out = redactor(None, "info", {"event": "x", "obj": Holder()})
    assert out["obj"] == f"Holder({REDACTED})"


def test_json_log_redacts_nested_secret(log_stream: io.StringIO) -> None:
    """End to end through structlog: a secret nested in a dict never reaches the line."""
    configure_logging(level="info", fmt="json", stream=log_stream)
    secret = generate_password()
    REDACTOR.add([secret])
    get_logger("t").info("nested", detail={"creds": [secret]})
    line = log_stream.getvalue()
    assert secret not in line
    assert json.loads(line.splitlines()[-1])["detail"] == {"creds": [REDACTED]}


def test_secret_inside_a_longer_token_run_is_found() -> None:
    """Registered values are found inside longer URL-safe runs and overlapping ones merge."""
    redactor = Redactor()
    a, b = generate_password(), generate_password()
    redactor.add([a, b, a[5:] + "zzzzz"])
    assert redactor.redact(f"x_{a}_y") == f"x_{REDACTED}_y"
    assert redactor.redact(f"{a}{b}") == REDACTED + REDACTED
    assert redactor.redact(a + "zzzzz") == REDACTED


def test_redaction_cost_does_not_grow_with_the_number_of_secrets() -> None:
    """L11: one line is checked by lookups per secret length, not one scan per secret."""
    few, many = Redactor(), Redactor()
    probe = generate_password()
    few.add([probe])
    many.add([probe, *(generate_password() for _ in range(20_000))])
    line = f"connected with {probe} and some text " * 4
    import timeit

    t_few = min(timeit.repeat(lambda: few.redact(line), number=200, repeat=3))
    t_many = min(timeit.repeat(lambda: many.redact(line), number=200, repeat=3))
    assert many.redact(line).count(REDACTED) == 4
    # 20 000 times the secrets must not cost anywhere near 20 000 times the time.
    assert t_many < t_few * 5 + 0.01
