"""Container health check of the cloner daemon: GET /healthz on CLONER_HTTP_LISTEN.

Exit 0 when the daemon answers 200, 1 otherwise (Docker's HEALTHCHECK
contract). Standard library only: slim base images have no curl. A wildcard
listen address (``0.0.0.0``, ``::``) is probed on the matching loopback.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_LISTEN = "127.0.0.1:8080"
TIMEOUT_S = 3.0


def healthz_url(listen: str) -> str:
    """The /healthz URL of a ``host:port`` listen address, wildcards mapped to loopback."""
    host, _, port = listen.strip().rpartition(":")
    host = host.strip("[]")
    if host in {"", "0.0.0.0"}:  # noqa: S104 - a listen wildcard, mapped to loopback
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{int(port)}/healthz"


def main() -> int:
    """Probe once; 0 healthy, 1 not."""
    url = healthz_url(os.environ.get("CLONER_HTTP_LISTEN") or DEFAULT_LISTEN)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http URL built above
            healthy = response.status == 200
    except OSError as exc:  # refused, timed out, or an HTTP error status (503...)
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
