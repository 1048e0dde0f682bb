"""The ``cloner`` command line: thin over the same services the daemon uses."""
