# Two commands on a fresh Debian machine, as root:
#   make demo   installs what it needs and runs the main job on the embedded reader
#   make test   installs what it needs (pcscd, vpcd, pcsc-tools, opensc, postgresql too) and runs
#               every test
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
APT_RUNTIME := gcc libpcsclite-dev swig python3-dev
# postgresql: the tests' private server (tests/pg.py) for the PostgreSQL engine
APT_TEST := pcscd vsmartcard-vpcd vsmartcard-vpicc pcsc-tools opensc socat tshark iproute2 util-linux \
	postgresql
APT_STAMP := $(VENV)/.apt-stamp
APT_TEST_STAMP := $(VENV)/.apt-test-stamp
PIP_STAMP := $(VENV)/.pip-stamp

.PHONY: demo test lint bench clean deps test-deps upgrade-deps atr-list

demo: deps
	$(VENV)/bin/nettx demo

test: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -rs

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# pcsc_scan names the card: its ATRs in the per-user list pcsc-tools reads (see README)
atr-list: deps
	$(VENV)/bin/nettx card atr-list --install

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

# constraints.txt pins every package (and, through PIP_CONSTRAINT, the build backend) so a
# fresh machine installs what CI tested; `make upgrade-deps` moves the pins on purpose.
$(PIP_STAMP): pyproject.toml constraints.txt $(APT_STAMP)
	test -x $(PY) || python3 -m venv $(VENV)
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(PY) -m pip install -q -e '.[test]'
	touch $@

upgrade-deps: $(APT_STAMP)
	rm -rf $(VENV).upgrade && python3 -m venv $(VENV).upgrade
	$(VENV).upgrade/bin/python -m pip install -q --upgrade pip setuptools
	$(VENV).upgrade/bin/python -m pip install -q -e '.[test]'
	{ sed -n '1,2p' constraints.txt; \
	  $(VENV).upgrade/bin/python -m pip freeze --all --exclude-editable | grep -v '^nettx' | sort -f; \
	} > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf $(VENV).upgrade
	@echo "constraints.txt updated: review the diff, run make test, commit"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis build *.egg-info

# Kill -9 a random party every 0.3-1.5 s while holders buy; check the ledger, the shipments
# and every holder's outcome afterwards (tests/e2e/chaos.py). The suite runs a one-minute one.
CHAOS_SECONDS ?= 600
CHAOS_HOLDERS ?= 6
CHAOS_SEED ?= 11
.PHONY: chaos
chaos: deps
	$(PY) -m tests.e2e.chaos --seconds $(CHAOS_SECONDS) --holders $(CHAOS_HOLDERS) \
	  --seed $(CHAOS_SEED)
