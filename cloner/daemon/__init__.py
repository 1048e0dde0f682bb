"""The long-running daemon: workers, HTTP (API + /metrics), graceful shutdown."""
