# One entry point for people and CI. `make demo` and `make test` each set up
# everything they need on a fresh Debian machine, then run.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-fund --no-audit --loglevel=error
	touch $@

setup: $(VENV)/.installed

# Debian's Chromium drives the browser tests (Playwright's own browser
# download is not used); Node.js runs tsc, node --test and the Hub's proxy.
# Only what is missing is installed (.ci/system-deps says why).
system-deps:
	@bash .ci/system-deps

demo: setup
	$(VENV)/bin/jupyter lab --allow-root --ServerApp.open_browser=True examples/demo.ipynb

lint: setup node_modules/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	npm run --silent typecheck

test: system-deps setup node_modules/.installed lint
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# wrk (req/s) and curl (downloads) keep the client from being the bottleneck;
# without them benchmarks/run.py falls back to its own asyncio clients.
bench: setup
	@command -v wrk >/dev/null && command -v curl >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq wrk curl >/dev/null; } || true
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) node_modules .coverage* .pytest_cache .mypy_cache .ruff_cache
