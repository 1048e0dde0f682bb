"""``python -m cloner``."""

from cloner.cli.main import main

main()
