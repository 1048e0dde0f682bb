"""Generate the compose stack's secrets once: the /metrics token, the Grafana admin password.

    python3 deploy/init_secrets.py DIR

Writes ``DIR/metrics.token`` (read by the cloner service as CLONER_METRICS_TOKEN
and by Prometheus as its scrape credentials) and ``DIR/grafana_admin_password``
(GF_SECURITY_ADMIN_PASSWORD__FILE) when they are missing; existing files are
kept, so restarts never change them. Each value has 256 bits of entropy. The
files are readable by the three services' users (different uids), and the
directory is a volume only those services mount.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

FILES = ("metrics.token", "grafana_admin_password")


def ensure_secrets(directory: Path) -> list[str]:
    """Create the missing secret files in ``directory``; the names created."""
    directory.mkdir(parents=True, exist_ok=True)
    created = []
    for name in FILES:
        path = directory / name
        if path.exists() and path.read_text().strip():
            continue
        tmp = directory / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        created.append(name)
    return created


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: init_secrets.py DIR")
    made = ensure_secrets(Path(sys.argv[1]))
    print(f"created: {', '.join(made)}" if made else "secrets already present")
