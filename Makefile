# The two commands of the README:
#   make demo   install everything (first time) and run the main job on the embedded defaults
#   make test   install everything (first time) and run the test suite
VENV ?= $(if $(ATTN_VENV),$(ATTN_VENV),.venv)
PY := $(VENV)/bin/python
OUT ?= demo_output

.PHONY: setup demo test lint typecheck test-fast bench-attention
setup:
	@ATTN_VENV=$(VENV) bash scripts/setup.sh

demo: setup
	$(VENV)/bin/attn-demo --out $(OUT)

test: setup lint
	$(PY) -m pytest -n 2 --timeout 600 -q -p no:cacheprovider

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Static types of core/ and tasks/ alone ([tool.mypy] in pyproject.toml; also part of `lint`).
typecheck: setup
	$(PY) -m mypy

test-fast: setup
	$(PY) -m pytest -n 2 -q -m "not slow" -p no:cacheprovider

bench-attention: setup
	$(PY) benchmarks/attention.py --json benchmarks/out/attention.json
