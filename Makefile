# One entry point for people and CI. `make demo` and `make test` each set up
# everything they need on a fresh Debian machine, then run.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
COMPAT ?= .venv-compat
FRAMEWORKS ?= .venv-frameworks
LOWEST ?= .venv-lowest
PYTEST_ARGS ?=

.PHONY: setup system-deps demo test test-lowest lint js bench bench-widgets docs docs-serve clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# A second, clean venv: localtileserver 1.0.0 unchanged from PyPI beside this
# checkout (tests/compat_fixtures.py). This project's pre-release version
# satisfies localtileserver's `jupyter-loopback>=0.3.3` only because it is
# named on the same command line; the last line fails the step if pip swapped
# in 0.3.3 from the index instead.
$(COMPAT)/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/python -m pip install -q --upgrade pip
	$(COMPAT)/bin/python -m pip install -q -e ".[comm]" localtileserver==1.0.0 ipyleaflet jupyterlab ipykernel
	$(COMPAT)/bin/python -I -c "import sys, loopback_asgi; sys.exit(not loopback_asgi.__file__.startswith('$(CURDIR)/'))"
	touch $@

# A third venv: marimo, Solara, Shiny and shinywidgets from PyPI beside this
# checkout, whose servers the browser tests start (tests/framework_fixtures.py).
# Solara is held at the release of the newest solara-assets, which serves its
# front end from the package instead of a CDN (tests reach only loopback).
$(FRAMEWORKS)/.installed: pyproject.toml
	$(PYTHON) -m venv $(FRAMEWORKS)
	$(FRAMEWORKS)/bin/python -m pip install -q --upgrade pip
	$(FRAMEWORKS)/bin/python -m pip install -q -e ".[comm]" "marimo>=0.23.14" "shiny>=1.0" "shinywidgets>=0.8.0" \
	  solara==1.58.2 solara-server==1.58.2 solara-ui==1.58.2 solara-assets==1.58.2
	$(FRAMEWORKS)/bin/python -I -c "import sys, comm_bridge; sys.exit(not comm_bridge.__file__.startswith('$(CURDIR)/'))"
	touch $@

# A venv with every dependency at the lower bound pyproject.toml states
# (.ci/lowest-constraints.py pins them; pip has no lowest resolution), so the
# bounds stay true. Test tools come at their newest.
$(LOWEST)/.installed: pyproject.toml .ci/lowest-constraints.py
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) .ci/lowest-constraints.py comm > $(LOWEST)/constraints.txt
	$(LOWEST)/bin/python -m pip install -q -c $(LOWEST)/constraints.txt -e ".[comm]" \
	  pytest pytest-timeout pytest-asyncio hypothesis ipykernel jupyter-client psutil
	touch $@

# The sidecar, the adapter under a real jupyter server, and the comm bridge on
# the lowest versions (no browser or Hub tests: about 3 minutes). uvloop < 0.23
# offers no socket for the kernel-side body relay, which then falls back to
# copying: its two tests that assert the relay was taken are left out. Old
# jupyter_core warns about its paths unless JUPYTER_PLATFORM_DIRS is set.
test-lowest: $(LOWEST)/.installed node_modules/.installed
	JUPYTER_PLATFORM_DIRS=1 $(LOWEST)/bin/python -m pytest -p no:cacheprovider -q -m "not browser and not hub" \
	  tests/sidecar/test_headers.py tests/test_namespaces.py tests/sidecar/test_app.py tests/transports/test_http.py tests/sidecar/relay/test_http.py \
	  tests/protocols/test_http.py tests/protocols/test_http_big_bodies.py tests/sidecar/relay/test_websocket.py tests/transports/test_websocket_wire.py \
	  tests/protocols/test_websocket.py tests/transports/test_websocket.py tests/jupyter/test_websocket.py \
	  tests/jupyter/test_response.py \
	  tests/jupyter/test_handler.py tests/jupyter/test_security.py tests/comm_bridge/test_widget.py \
	  --deselect tests/protocols/test_http_big_bodies.py::test_big_bodies_go_kernel_side_and_the_connection_carries_on \
	  --deselect tests/protocols/test_http_big_bodies.py::test_an_upstream_dying_mid_body_cuts_a_kernel_side_body

node_modules/.installed: package.json package-lock.json
	npm ci --no-fund --no-audit --loglevel=error
	touch $@

setup: $(VENV)/.installed

# The comm bridge's front end: comm_bridge/js/ bundled by esbuild into the one
# file anywidget loads, comm_bridge/static/bridge.js (committed; a node test
# fails when it is not a fresh build).
js: node_modules/.installed
	npm run --silent build

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

test: system-deps setup $(COMPAT)/.installed $(FRAMEWORKS)/.installed node_modules/.installed lint test-lowest
	$(PY) -m pytest --cov --cov-report=term $(PYTEST_ARGS)

# wrk (req/s) and curl (downloads) keep the client from being the bottleneck;
# without them benchmarks/run.py falls back to its own asyncio clients.
bench: setup
	@command -v wrk >/dev/null && command -v curl >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq wrk curl >/dev/null; } || true
	$(PY) benchmarks/run.py

# Widget round trips in JupyterLab and Chromium, Nagle on and off on the
# kernel websocket (docs/benchmarks.md); not part of `make test`.
bench-widgets: system-deps setup
	$(PY) benchmarks/widget_latency.py $(BENCH_ARGS)

# The docs site (MkDocs): built strictly, so a warning or a broken link fails.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) $(COMPAT) $(FRAMEWORKS) $(LOWEST) node_modules .coverage* .pytest_cache .mypy_cache .ruff_cache
