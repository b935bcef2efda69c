# Polyroute: `make run` opens the app, `make test` runs every check. Both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
DB ?= data/demo.duckdb
PORT ?= 8501
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-dev chromium lint typecheck pytest bench clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt requirements-base.txt pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

## Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
chromium:
	@[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

## The first run builds the demo store (the shipped demo model over every built-in language, about a minute).
run: install
	@mkdir -p $(dir $(DB))
	@[ -f $(DB) ] || $(VENV)/bin/polyroute demo --db $(DB)
	POLYROUTE_DB=$(DB) $(VENV)/bin/streamlit run app.py --server.port $(PORT) --server.address 127.0.0.1

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install-dev
	$(VENV)/bin/mypy

pytest: install-dev chromium
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q

test: lint typecheck pytest

## Speed and size goals (JSON on stdout); the peer comparison needs nnsight.
bench: install-dev chromium
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) bench/capture.py
	$(PY) bench/analysis.py
	$(PY) bench/app.py
	$(PY) bench/steer.py
	$(PY) bench/remote.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
