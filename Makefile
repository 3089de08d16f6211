# One target per habit. `make demo` and `make test` set up .venv on first use.
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel (2.13.0) this project is
# verified with; on a CUDA machine use e.g. `make demo TORCH_SPEC=torch==2.13.0` from PyPI
# (PyPI's Linux wheels are CUDA builds) or your cluster's image.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
WORKDIR ?= work

.PHONY: setup browser demo test test-all lint bench gpu-check gpu-pack clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@# ask torch/transformers once what validate needs of the demo model (kept in ~/.cache/orchestrator)
	-$(BIN)/orchestrator validate sweeps/demo.yaml >/dev/null
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/orchestrator run sweeps/demo.yaml --workdir $(WORKDIR)

# Debian's Chromium for the real-browser test (tests/test_browser.py, which is skipped without it).
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Chromium (apt-get) for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
			|| echo "could not install Chromium: tests/test_browser.py will be skipped"; \
	else echo "no Chromium (as root: apt-get install chromium): tests/test_browser.py will be skipped"; fi

test: setup browser
	$(BIN)/pytest

test-all: setup
	$(BIN)/pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check orchestrator trainables search_spaces tests bench
	$(BIN)/ruff format --check orchestrator trainables search_spaces tests bench

gpu-check: setup  # the training step per strategy x precision on this machine's GPU (CPU without one)
	$(BIN)/python bench/gpu_check.py

gpu-pack: setup  # what the lent GPU machine lacks, in loads of one device call each (bench/gpu_run.sh)
	$(BIN)/python bench/gpu_pack.py

bench: setup  # needs ../shared/data; bench_strategies takes about 1.5 hours on 2 cores
	$(BIN)/python bench/bench_validate.py
	$(BIN)/python bench/bench_context.py
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_pay_once.py
	$(BIN)/python bench/bench_prefix_dtype.py
	$(BIN)/python bench/bench_strategies.py --datasets cr
	$(BIN)/python bench/bench_strategies.py --datasets subj --train-rows 1200 \
		--configs head-only freeze-3 bitfit lora full

clean:
	rm -rf $(WORKDIR) .pytest_cache
