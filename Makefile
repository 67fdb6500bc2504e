# Tiangong: the two commands.
#   make up    install (once) and run the whole platform with a simulated factory
#   make test  install (once) the development tools and run the whole suite
# Both create .venv on first use and reinstall only when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UP_ARGS ?=

.PHONY: up test lint typecheck unit bench clean browser

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

# The interop tests also drive third-party peers: Eclipse Tahu's Sparkplug B client (Node.js),
# pinned by tests/interop/package-lock.json. `npm ci` installs exactly the lock, afresh.
$(VENV)/.installed-dev: pyproject.toml tests/interop/package-lock.json | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: install Node.js 20 for the Tahu interop tests (they fail under CI=true)"; fi
	@touch $@ $(VENV)/.installed-run

up: $(VENV)/.installed-run
	$(BIN)/tiangong up $(UP_ARGS)

# The browser test drives Debian's chromium (and its screenshots show Chinese names, which need a
# CJK font); install both when missing and we may (root + apt).
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk"; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and a CJK font for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-zenhei) >/dev/null; \
	  else echo "chromium or a CJK font is missing: install Debian's chromium and fonts-wqy-zenhei"; fi; fi

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

unit: $(VENV)/.installed-dev browser
	$(BIN)/pytest

test: lint typecheck unit

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/gateway_throughput.py
	$(BIN)/python bench/store_forward_drain.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
