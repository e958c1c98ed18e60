# The two commands of the README. Each builds its own virtual environment with the exact versions of
# the lock, constraints.txt (pyproject.toml declares ranges; rebuilt when either changes).
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
EXTRAS ?= dev
BIN := $(VENV)/bin

.PHONY: reproduce book test lint wheel-check deepspeed-check clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
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

## wheel-check: build the wheel, install it (not -e) into a fresh venv, import every module, run the three --help
wheel-check: $(VENV)/.installed
	$(BIN)/python benchmarks/wheel_check.py

## lint: ruff on the package, the tests and the notebooks' text pairs; each pair in sync
lint: $(VENV)/.installed
	$(BIN)/ruff check bfpo tests benchmarks notebooks
	$(BIN)/ruff format --check bfpo tests benchmarks notebooks
	$(BIN)/python -m bfpo.notebooks --check-pairs

clean:
	rm -rf $(VENV) runs
