"""Static checks of template SQL before anything touches a database."""

from __future__ import annotations

import re

# Templates run inside the engine's own transaction as the tenant owner role:
# anything that manages transactions, roles or privileges belongs to cloner.
_FORBIDDEN = [
    (re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION)\b", re.I | re.M),
     "transaction control is cloner's job"),
    (re.compile(r"\b(CREATE|ALTER|DROP)\s+(ROLE|USER|DATABASE)\b", re.I),
     "roles and databases are created by cloner"),
    (re.compile(r"^\s*(GRANT|REVOKE)\b", re.I | re.M), "privileges are set by the rbac step"),
    (re.compile(r"\bCREATE\s+EXTENSION\b", re.I), "extensions need a superuser"),
    (re.compile(r"^\s*\\", re.M), "psql meta-commands are not SQL"),
    (re.compile(r"\bOWNER\s+TO\b", re.I), "ownership is set by cloner"),
]


def _strip_comments(sql: str) -> str:
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    return re.sub(r"--[^\n]*", "", sql)


def lint_sql(sql: str) -> list[str]:
    """Errors found in template SQL (empty list = fine)."""
    body = _strip_comments(sql)
    errors = [f"{reason}: {m.group(0).strip()!r}"
              for pattern, reason in _FORBIDDEN for m in [pattern.search(body)] if m]
    if body.count("'") % 2:
        errors.append("unbalanced single quote")
    if body.count("(") != body.count(")"):
        errors.append("unbalanced parentheses")
    if not body.strip():
        errors.append("template is empty")
    return errors
