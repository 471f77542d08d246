# Switchyard — the two set-up commands are `make demo` and `make test`.
# Both create .venv when missing, install what they need (idempotent: stamps keyed on
# pyproject.toml, and pip's wheel cache makes the llama-cpp-python build a one-time cost),
# and install the system tools when run as root.

PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/python -m pip
# llama-cpp-python ships only a source release: build a portable wheel (no -march=native),
# so the wheel pip caches runs on any x86-64.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Weights come from installed packages only; a missing model fails in milliseconds.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test check bench bench-quick screenshots sysdeps clean

# The suite runs on every core (pytest-xdist, at most four workers: many tests wait on a
# subprocess or a server, and two workers ran it 1.7x faster than one on two cores).
# `make test PYTEST_WORKERS=2` sets the count, `make test PYTEST_WORKERS=` runs one process.
# The snapshot tests run apart, in one process: under xdist syrupy skips its check for
# snapshots no test uses any more (a renamed test's stale picture would pass unseen).
PYTEST_WORKERS ?= auto
XDIST := $(if $(PYTEST_WORKERS),-n $(PYTEST_WORKERS) --maxprocesses 4 --dist worksteal)
SNAPSHOTS := tests/tui/test_snapshots.py

# The main job: the workbench on the shipped example repo, served by the embedded model.
# Without a terminal (a pipe, CI) it runs the same pipeline headless instead.
demo: $(VENV)/.stamp-demo sysdeps
	@if [ -t 0 ] && [ -t 1 ]; then \
	  $(BIN)/switchyard demo; \
	else \
	  echo "no terminal: running the demo pipeline headless (switchyard run --demo)"; \
	  $(BIN)/switchyard run --demo --approve deny || true; \
	fi

test: $(VENV)/.stamp-test sysdeps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	@# pytest exits 5 when it collected nothing: never a pass (nor a silent failure).
	@$(BIN)/python -m pytest -q -p no:cacheprovider $(XDIST) --ignore=$(SNAPSHOTS); rc=$$?; \
	$(BIN)/python -m pytest -q -p no:cacheprovider $(SNAPSHOTS); snap=$$?; \
	for code in $$rc $$snap; do \
	  if [ $$code -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	done; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; \
	exit $$snap

check: $(VENV)/.stamp-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# the full set (~130 min at most: the time-outs' sum); bench-quick: P1-P5 on this project's history (~20 min
# here, ~55 at most)
bench: $(VENV)/.stamp-test
	$(BIN)/python -m bench --set full

bench-quick: $(VENV)/.stamp-test
	$(BIN)/python -m bench --set quick

# SVGs of each screen and theme from the real app (run_test + save_screenshot over a
# scripted session), and PNGs made from them with rsvg-convert.
# Textual's SVGs name Fira Code with a textLength per run; rsvg-convert ignores textLength,
# so with a narrower fallback font (DejaVu) long borders stopped short of their corner.
screenshots: $(VENV)/.stamp-test sysdeps
	@if ! fc-list 2>/dev/null | grep -qi "Fira Code"; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-firacode >/dev/null) \
	      || echo "warning: could not install fonts-firacode; PNG borders may fall short"; \
	  else \
	    echo "note: install fonts-firacode for PNGs drawn in the SVGs' own font"; \
	  fi; \
	fi
	$(BIN)/python -m app.tui.screenshots

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first, pinned to the CPU build that lies on this machine's disk: anything that
# pulls torch later (sentence-transformers) then finds it satisfied and never fetches CUDA.
$(VENV)/.stamp-torch: | $(BIN)/python
	$(PIP) install -q torch==2.13.0
	touch $@

$(VENV)/.stamp-demo: pyproject.toml $(VENV)/.stamp-torch
	$(PIP) install -q -e ".[local,demo]"
	touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-torch
	$(PIP) install -q -e ".[local,demo,embed,dev]"
	touch $@ $(VENV)/.stamp-demo

# The sandbox (bubblewrap), the SVG→PNG converter and PostgreSQL (the team store's tests
# start a throwaway cluster; Debian keeps initdb under /usr/lib/postgresql/N/bin). As
# root: installed when missing. Elsewhere: say what to install and go on; the product
# reports a degraded sandbox (GR-005), and the PostgreSQL tests skip (fail under CI=true).
sysdeps:
	@missing=""; \
	command -v bwrap >/dev/null 2>&1 || missing="$$missing bubblewrap"; \
	command -v rsvg-convert >/dev/null 2>&1 || missing="$$missing librsvg2-bin"; \
	{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 \
	  || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; the sandbox will run degraded"; \
	  else \
	    echo "note: please install$$missing (e.g. sudo apt-get install$$missing);"; \
	    echo "      without bubblewrap the sandbox runs degraded (GR-005 audit line)"; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache bench/.venv-litellm bench/results
