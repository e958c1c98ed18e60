# The two commands of the README. Each builds its own virtual environment from the
# pinned dependencies in pyproject.toml (rebuilt when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
EXTRAS ?= dev
BIN := $(VENV)/bin

.PHONY: reproduce book test lint deepspeed-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

## reproduce: run every notebook with papermill (PROFILE=smoke by default)
reproduce: $(VENV)/.installed
	$(BIN)/python -m bfpo.notebooks --profile $(PROFILE)

## book: the static HTML site of the executed notebooks of PROFILE (after make reproduce): runs/$(PROFILE)/book/html
book: $(VENV)/.installed
	$(BIN)/python -m bfpo.book --profile $(PROFILE)

## test: lint, then run the test suite (it also lints the Dockerfile with hadolint)
test: $(VENV)/.installed lint
	$(BIN)/python -m pytest

## deepspeed-check: DeepSpeed's own validation of the ZeRO-3 config (deepspeed installs without a GPU,
## built against the installed torch, without its CUDA ops)
deepspeed-check: $(VENV)/.installed
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-build-isolation deepspeed==0.19.8
	BFPO_REQUIRE_DEEPSPEED=1 $(BIN)/python -m pytest -q tests/test_scaling.py

## lint: ruff on the package, the tests and the notebooks' text pairs; each pair in sync
lint: $(VENV)/.installed
	$(BIN)/ruff check bfpo tests benchmarks notebooks
	$(BIN)/ruff format --check notebooks
	$(BIN)/python -m bfpo.notebooks --check-pairs

clean:
	rm -rf $(VENV) runs
