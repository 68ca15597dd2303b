# Two commands do everything on a fresh machine:  make run   /   make test
.PHONY: setup run test bench lint

PORT ?= 9001

setup:
	@scripts/setup.sh

run: setup
	HF_HUB_OFFLINE=1 .venv/bin/uvicorn main:app --host 0.0.0.0 --port $(PORT)

test: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m bench.run_all

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .
