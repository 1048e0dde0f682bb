"""Static checks of template SQL before anything touches a database."""

from __future__ import annotations

import re

# Templates run inside the engine's own transaction as the tenant owner role:
# anything that manages transactions, roles or privileges belongs to cloner.
# Checked on the text with strings, comments and $$-bodies removed, so a
# PL/pgSQL BEGIN or a '--' inside a literal is not mistaken for one of these.
_FORBIDDEN = [
    (re.compile(
        r"^\s*(?:(?:BEGIN|START\s+TRANSACTION)(?:\s+(?:TRANSACTION|WORK|ISOLATION\b[^;]*))?"
        r"|(?:COMMIT|ROLLBACK|END)(?:\s+(?:TRANSACTION|WORK))?)\s*;",
        re.I | re.M), "transaction control is cloner's job"),
    (re.compile(r"\b(CREATE|ALTER|DROP)\s+(ROLE|USER|DATABASE)\b", re.I),
     "roles and databases are created by cloner"),
    (re.compile(r"^\s*(GRANT|REVOKE)\b", re.I | re.M), "privileges are set by the rbac step"),
    (re.compile(r"\bCREATE\s+EXTENSION\b", re.I), "extensions need a superuser"),
    (re.compile(r"^\s*\\", re.M), "psql meta-commands are not SQL"),
    (re.compile(r"\bOWNER\s+TO\b", re.I), "ownership is set by cloner"),
]
# A sqlite template must not reach outside its own file or change how it is opened.
_FORBIDDEN_SQLITE = [
    (re.compile(r"\b(ATTACH|DETACH)\b", re.I), "a sqlite template may not attach other files"),
    (re.compile(r"\bPRAGMA\b", re.I), "pragmas are set by the sqlite engine"),
    (re.compile(r"\bVACUUM\b", re.I), "VACUUM (INTO) writes files outside the template"),
    (re.compile(r"\bload_extension\b", re.I), "extensions are not loaded"),
]
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def strip_literals(sql: str) -> tuple[str, str | None]:
    """SQL with comments removed and literals/bodies emptied; plus an error if one is unclosed."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end < 0:
                return "".join(out), "unclosed /* comment"
            i = end + 2
            out.append(" ")
        elif ch in "'\"":
            j = i + 1
            while True:
                j = sql.find(ch, j)
                if j < 0:
                    kind = "single" if ch == "'" else "double"
                    return "".join(out), f"unbalanced {kind} quote"
                if sql.startswith(ch * 2, j):  # doubled quote is an escaped quote
                    j += 2
                    continue
                break
            out.append(ch * 2)
            i = j + 1
        elif ch == "$" and (m := _DOLLAR_TAG.match(sql, i)):
            end = sql.find(m.group(0), m.end())
            if end < 0:
                return "".join(out), f"unclosed dollar-quoted body {m.group(0)}"
            out.append("$$")
            i = end + len(m.group(0))
        else:
            out.append(ch)
            i += 1
    return "".join(out), None


def lint_sql(sql: str, engine: str | None = None) -> list[str]:
    """Errors found in template SQL (empty list = fine); ``engine`` adds its own rules."""
    body, unclosed = strip_literals(sql)
    rules = _FORBIDDEN + (_FORBIDDEN_SQLITE if engine == "sqlite" else [])
    errors = [f"{reason}: {m.group(0).strip()!r}"
              for pattern, reason in rules for m in [pattern.search(body)] if m]
    if unclosed:
        errors.append(unclosed)
    elif body.count("(") != body.count(")"):
        errors.append("unbalanced parentheses")
    if not body.strip():
        errors.append("template is empty")
    return errors


def lint_template(engine: str, text: str) -> list[str]:
    """Errors in one template file of ``engine``: JSON templates for mongodb, SQL otherwise."""
    if engine == "mongodb":
        from cloner.catalog.mongo_template import lint_mongo_template

        return lint_mongo_template(text)
    return lint_sql(text, engine)
