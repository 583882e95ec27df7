# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make run    train the default experiment (experiments/base)
#   make test   run the test suite
#   make lint   ruff: lint and formatting check
#   make check-install  pip resolves the pinned dependencies for Python 3.11-3.13 on Linux
#                       x86-64/aarch64 and macOS arm64 (a dry run against PyPI, no install)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IDX_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint check-install install data bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,bench,export]"
	touch $@

# The real Fashion-MNIST IDX files from Debian's package (tfds builds its dataset from them offline).
# Where apt is not available, tfds downloads the dataset instead.
data:
	@if [ -f $(IDX_DIR)/t10k-labels-idx1-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist; \
	else echo "apt-get not found: tfds will download fashion_mnist on first use."; fi

run: install data
	$(BIN)/python -m fashion_jax.run --workdir experiments/base

# Two pytest-xdist workers, one test file each at a time (a file's module fixtures are built once):
# 10.5-13.5 minutes on the 2-core VM, whose speed varies by the hour (631, 637, 755, 787 and 806 s
# on 2026-12-04, median 755 s), against 15 in one process (913 s, back to back with a two-worker
# 675 s). PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: install data
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

check-install: install
	$(BIN)/python .ci/check-install

bench: install data
	$(BIN)/python benchmarks/step_speed.py
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/vs_keras.py

clean:
	rm -rf $(VENV) .pytest_cache
