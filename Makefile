# The two commands a new user runs; both install what they need first (idempotently).
.PHONY: setup test demo lint

setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q

demo: setup
	bash scripts/demo.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
