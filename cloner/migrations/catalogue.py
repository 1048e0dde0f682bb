"""Comparing two schema catalogues (``MigrationHooks.schema_catalogue``).

Used to prove that a migrated database has exactly the schema of a fresh one
at the same version, and to say where it does not, one line per difference.
"""

from __future__ import annotations

import json
from typing import Any


def _flatten(value: Any, path: str, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key in sorted(value):
            _flatten(value[key], f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
        # Named entries (relations, constraints, indexes …) are matched by name, and their
        # position is kept as its own line: column order matters, list order of tables not.
        for index, item in enumerate(value):
            key = f"{path}[{item['name']}]"
            if "relation" in item:
                key = f"{path}[{item['relation']}.{item['name']}]"
            _flatten({k: v for k, v in item.items() if k != "name"}, key, out)
            if path.startswith("columns."):
                out[f"{key}.position"] = str(index)
    else:
        out[path] = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def diff_catalogues(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Differences between two catalogues, one readable line each (empty: identical)."""
    left: dict[str, str] = {}
    right: dict[str, str] = {}
    _flatten(expected, "", left)
    _flatten(actual, "", right)
    lines = []
    for key in sorted(left.keys() | right.keys()):
        a, b = left.get(key), right.get(key)
        if a == b:
            continue
        if a is None:
            lines.append(f"+ {key} = {b}")
        elif b is None:
            lines.append(f"- {key} = {a}")
        else:
            lines.append(f"~ {key}: {a} → {b}")
    return lines
