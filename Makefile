# Two commands on a fresh Debian machine, as root:
#   make demo   installs what it needs and runs the main job on the embedded reader
#   make test   installs what it needs (pcscd, vpcd, pcsc-tools, opensc too) and runs every test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_RUNTIME := gcc libpcsclite-dev swig python3-dev
APT_TEST := pcscd vsmartcard-vpcd vsmartcard-vpicc pcsc-tools opensc socat
APT_STAMP := $(VENV)/.apt-stamp
APT_TEST_STAMP := $(VENV)/.apt-test-stamp
PIP_STAMP := $(VENV)/.pip-stamp

.PHONY: demo test lint bench clean deps test-deps

demo: deps
	$(VENV)/bin/nettx demo

test: test-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -rs

lint: deps
	$(VENV)/bin/ruff check .

bench: test-deps
	$(PY) bench/apdu.py

# Every fuzz target (tests/fuzz/targets.py) for FUZZ_SECONDS each, work corpora and findings
# kept in FUZZ_WORK; prints executions per target, fails on any finding. `make test` runs
# each for NETTX_FUZZ_SECONDS (10 s) as part of the suite.
FUZZ_SECONDS ?= 300
FUZZ_WORK ?= .fuzz
FUZZ_TARGETS ?=
.PHONY: fuzz
fuzz: test-deps
	$(PY) -m tests.fuzz.campaign --seconds $(FUZZ_SECONDS) --work $(FUZZ_WORK) $(FUZZ_TARGETS)

deps: $(PIP_STAMP)
test-deps: $(PIP_STAMP) $(APT_TEST_STAMP)

# pyscard has no Linux wheel: it compiles against libpcsclite (gcc, swig, headers).
$(APT_STAMP):
	mkdir -p $(VENV)
	@if ! dpkg -s $(APT_RUNTIME) >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_RUNTIME); fi
	touch $@

$(APT_TEST_STAMP): $(APT_STAMP)
	@if ! dpkg -s $(APT_TEST) >/dev/null 2>&1; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_TEST); fi
	touch $@

$(PIP_STAMP): pyproject.toml $(APT_STAMP)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info
