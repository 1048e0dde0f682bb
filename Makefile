.PHONY: bootstrap demo test lint bench images
bootstrap: ; scripts/bootstrap.sh
demo: ; scripts/demo.sh
test: ; scripts/test.sh
lint: ; .venv/bin/ruff check cloner tests benchmarks && .venv/bin/mypy
bench: ; .venv/bin/python benchmarks/provision.py --count 20
images: ; .venv/bin/cloner images ensure
