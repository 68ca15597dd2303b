# Two commands do everything on a fresh machine:  make run   /   make test
.PHONY: setup setup-qwen run test bench lint container-check

PORT ?= 9001

setup:
	@scripts/setup.sh

# Opt-in: the Qwen2.5-Coder-0.5B-Instruct part model (~491 MB, hash-checked) for EMBEDDED_LLM_MODEL=qwen2.5-0.5b
setup-qwen: setup
	.venv/bin/python scripts/fetch_embedded_model.py qwen2.5-0.5b

run: setup
	HF_HUB_OFFLINE=1 .venv/bin/uvicorn main:app --host 0.0.0.0 --port $(PORT)

test: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m bench.run_all

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

# Builds the container image here (podman, a debootstrap base, this machine's pip settings) and checks
# it end to end (scripts/container_check.sh); not part of `make test`. Needs root.
container-check: setup
	scripts/container_check.sh
