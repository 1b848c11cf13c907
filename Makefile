# Two commands a user needs: `make serve` and `make test`. Both create and reuse
# a local virtual environment in .venv; it is reinstalled when the build inputs change.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
SRC := src tests benchmarks
NODE_DIR := clients/node
NODE_INSTALLED := $(NODE_DIR)/node_modules/.installed

.PHONY: serve test lint test-python test-node bench bench-hotpath clean system-packages cluster-demo

$(INSTALLED): pyproject.toml setup.py $(wildcard ext/*.pyx ext/*.pxd)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: $(INSTALLED)
	$(BIN)/aigateway serve

test: lint test-python test-node

lint: $(INSTALLED)
	$(BIN)/ruff check $(SRC)
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/mypy

# What the tests run besides Python and Node.js: a real redis-server (the tests start
# their own on free ports) and Debian's chromium (the dashboard's browser tests drive it
# with Playwright, which downloads no browser of its own). Installed with apt-get when
# missing and root; otherwise one line says what to install.
system-packages:
	@command -v redis-server >/dev/null && command -v redis-cli >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing redis-server (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  else \
	    echo "make test needs redis-server: sudo apt-get install redis-server (or your system's package)" >&2; exit 1; \
	  fi; }
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the dashboard's browser tests (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make test needs chromium (the dashboard's browser tests): sudo apt-get install chromium" >&2; exit 1; \
	  fi; }

test-python: $(INSTALLED) system-packages
	$(BIN)/python -c 'import aigateway.hotpath as h; assert h.IMPLEMENTATION == "cython", h.IMPLEMENTATION'
	AIGATEWAY_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q tests/test_sse_decoder.py tests/test_hotpath_*.py tests/test_shm.py tests/test_shm_layout.py
	$(BIN)/python -m pytest

$(NODE_INSTALLED): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "make test needs Node.js 20 or later with npm (clients/node)" >&2; exit 1; }
	cd $(NODE_DIR) && npm ci --no-audit --no-fund
	touch $@

# The Node.js client's tests run against the real gateway from this checkout.
test-node: $(INSTALLED) $(NODE_INSTALLED)
	cd $(NODE_DIR) && AIGATEWAY_BIN=$(CURDIR)/$(BIN)/aigateway npm test

# Load scenarios against the baselines: make bench ARGS="--scenario overhead --duration 5"
bench: $(INSTALLED)
	$(BIN)/aigateway bench $(ARGS)

# One Redis and two gateway nodes on this machine (docs/cluster.md); Ctrl-C stops them.
cluster-demo: $(INSTALLED) system-packages
	$(BIN)/aigateway cluster-demo $(ARGS)

bench-hotpath: $(INSTALLED)
	$(BIN)/python -m pytest benchmarks/bench_*.py -q --benchmark-only --benchmark-columns=min,median,ops

clean:
	rm -rf $(VENV) build src/*.egg-info ext/*.c src/aigateway/hotpath/*.so $(NODE_DIR)/node_modules
