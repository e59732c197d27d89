# credroam: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV        := .venv
BIN         := $(VENV)/bin
# Debian's Python: python3-samba (Samba's own parsers, used as independent readers in tests) is
# importable only from it, so the venv is built on it with --system-site-packages.
SYSTEM_PY   := /usr/bin/python3
# gssapi (Kerberos binds, bind_method=gssapi) has no Linux wheel: pip builds it with gcc against
# the Python headers and MIT Kerberos' (libkrb5-dev); krb5-user brings kinit and klist.
# libxml2-utils: xmllint, which checks the rendered ADMX/ADML against Microsoft's ADMX schema.
# The core also runs on Debian's own Python libraries (what the agent's hosts have): python3-ldap3,
# -gssapi and -dnspython beside python3-cryptography, with -pytest and -hypothesis to test it so.
# libnss3-tools (certutil, pk12util) drive the NSS database mirror; chromium is the real
# application its tests authenticate with (tests/integration/test_app_stores.py), and the
# compliance HTML report is rendered in it, headless (tests/integration/test_compliance.py).
APT_PACKAGES := samba-ad-dc samba-ad-provision openssh-server python3-venv iproute2 smbclient ldb-tools util-linux \
                libkrb5-dev krb5-user gcc python3-dev libxml2-utils \
                python3-ldap3 python3-pytest python3-hypothesis python3-gssapi python3-dnspython \
                libnss3-tools chromium
LAB         ?= lab
PLAYBOOK    := $(BIN)/ansible-playbook
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# The venv first on PATH, as if activated (ansible-lint and Ansible look for their tools there).
export PATH := $(CURDIR)/$(BIN):$(PATH)
# The inventory script (inventories/lab) describes the lab named here.
export CREDROAM_LAB := $(LAB)

.PHONY: help deps run test lint unit unit-system integration molecule molecule-multi-dc lab-up lab-down lab-status bench \
        hunt fuzz fuzz-short clean agent

help:  ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

deps: .stamps/apt $(VENV)/.installed  ## Install Debian packages and the pinned Python venv.

.stamps/apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	    | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  [ "$$(id -u)" = 0 ] || { echo "Debian packages missing ($$missing): run make deps as root"; exit 1; }; \
	  echo "Installing Debian packages: $$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# The lab runs its own Samba and sshd in namespaces; the distribution's services must not
	@# grab the ports or start a second directory on the machine.
	@if [ -d /run/systemd/system ]; then \
	  systemctl disable --now samba-ad-dc smbd nmbd winbind ssh >/dev/null 2>&1 || true; \
	  systemctl mask samba-ad-dc >/dev/null 2>&1 || true; fi
	@mkdir -p .stamps && touch $@

$(VENV)/.installed: requirements.txt
	@test -x $(BIN)/python || $(SYSTEM_PY) -m venv --system-site-packages $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	@touch $@

run: deps  ## The main job: bring up the embedded lab forest and roll credential roaming out on it.
	$(PLAYBOOK) playbooks/lab.yml -e lab_forest_name=$(LAB) -e lab_forest_state=present
	$(PLAYBOOK) playbooks/site.yml
	$(PLAYBOOK) playbooks/summary.yml

lab-up: deps  ## Bring up the lab forest only (LAB=name for another lab).
	$(PLAYBOOK) playbooks/lab.yml -e lab_forest_name=$(LAB) -e lab_forest_state=present

lab-down: deps  ## Tear the lab forest down, leaving nothing behind.
	$(PLAYBOOK) playbooks/lab.yml -e lab_forest_name=$(LAB) -e lab_forest_state=absent

lab-status:  ## Show whether lab LAB is up: its DCs and client hosts, their addresses.
	@$(SYSTEM_PY) inventories/lab/lab_inventory.py --status

lint: deps  ## ruff and ansible-lint (production profile, offline).
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint --offline --profile production -q

unit: deps  ## Pure unit tests (no lab).
	$(BIN)/pytest -q tests/unit

unit-system: .stamps/apt  ## The core's unit tests on Debian's python3 and its packages, no venv.
	@# Module tests need Ansible and skip themselves; -p no:cacheprovider: nothing written here.
	$(SYSTEM_PY) -m pytest -q tests/unit -p no:cacheprovider

integration: deps  ## Integration tests; the session brings up and tears down its own lab.
	$(BIN)/pytest -q tests/integration

molecule: deps  ## Molecule scenario default on its own lab `mol`: up, site.yml twice, verify, down.
	$(BIN)/molecule test

molecule-multi-dc: deps  ## Molecule scenario multi_dc on lab `mdc` (2 DCs): paused replication, convergence timed.
	$(BIN)/molecule test -s multi_dc

# make test's second lab: the integration modules marked second_lab by conftest (those sharing
# one rollout, tests/integration/rollout.py, and a few that run before them) run in a pytest
# session of their own on it, beside the others (lab CREDROAM_TEST_LAB, default citest).
TEST_SECOND_LAB ?= citestro
TEST_SECOND_SUBNET ?= 172.29.202.0/24

test: deps  ## Everything CI runs, side by side: checks (lint, the core on Debian's Python, a short fuzz, unit tests), Molecule, and the integration tests on two labs.
	@# Four lanes that share nothing (each lab-bound one has its own lab: name, subnet,
	@# namespaces). The labs' hosts keep the lab lanes waiting more than computing, so on two
	@# cores the lanes end sooner side by side; the longest one's output is shown live. The
	@# checks (no lab) and Molecule end long before the two integration lanes, whose wait is
	@# the run's: they yield the CPU to them (nice; Molecule mildly, its lab has timeouts).
	@tests/side_by_side.sh .stamps \
	    checks 'nice -n 19 $(MAKE) --no-print-directory lint unit-system fuzz-short && \
	        nice -n 19 $(BIN)/pytest -q tests/unit' \
	    molecule-test 'nice -n 5 $(BIN)/molecule test' \
	    pytest-second-lab 'CREDROAM_TEST_LAB=$(TEST_SECOND_LAB) CREDROAM_TEST_SUBNET=$(TEST_SECOND_SUBNET) \
	        $(BIN)/pytest -q --durations=10 -m second_lab tests/integration' \
	    pytest-integration '$(BIN)/pytest -q --durations=10 -m "not second_lab" tests/integration'

agent: deps  ## Build dist/credroam-agent.pyz, the sync agent as one reproducible zipapp.
	$(BIN)/python agent/build_zipapp.py dist/credroam-agent.pyz

# Property tests in CI are derandomized (tests/hypothesis_profiles.py); a hunt draws fresh ones.
HUNT_EXAMPLES ?= 2000
HUNT_SCHEDULES ?= 100000
HUNT_SEED ?= 1
HUNT_JOBS ?= 2

hunt: deps hunt-schedules  ## Bug hunt: hunt-schedules, then every property test with HUNT_EXAMPLES (2000) fresh examples.
	HYPOTHESIS_PROFILE=hunt HYPOTHESIS_HUNT_EXAMPLES=$(HUNT_EXAMPLES) $(BIN)/pytest -q \
	    -p no:cacheprovider -m hypothesis --hypothesis-show-statistics tests/unit

hunt-schedules: deps  ## HUNT_SCHEDULES (100000) seeded convergence schedules; prints what broke (all 0).
	PYTHONPATH=module_utils:. $(BIN)/python -m tests.unit.convergence_hunt \
	    --schedules $(HUNT_SCHEDULES) --seed $(HUNT_SEED) --jobs $(HUNT_JOBS)

bench: deps  ## Benchmarks (core, agent, sync on a lab DC, lab up/down, rollout; bench/README.md), to bench/out/.
	$(BIN)/python bench/core.py
	$(BIN)/python bench/agent.py
	$(BIN)/python bench/sync_lab.py
	$(BIN)/python bench/lab_updown.py --rounds 1 --clients 1
	$(BIN)/python bench/rollout.py --hosts 1,3

# Coverage-guided fuzzing (atheris, libFuzzer inside): one target per parser of hostile input,
# fuzz/fuzz_<name>.py. atheris is kept out of the project's venv: pip installs its wheel into
# .fuzzdeps/ and the targets run on the project's Python with it on PYTHONPATH. A fixed seed
# makes a run repeatable; a crash stops `make` and leaves the input in fuzz/crashes/.
FUZZ_DEPS    := .fuzzdeps
FUZZ_TARGETS := tokens dn_binary preg certelement state store
# The store target lays out and lists a store folder per input, about 100 times the cost of
# a parser's input: it runs a tenth of the count.
FUZZ_RUNS    ?= 200000
FUZZ_SHORT_RUNS ?= 3000
FUZZ_FLAGS   := -seed=1 -timeout=60 -rss_limit_mb=2048

$(FUZZ_DEPS)/.installed: fuzz/requirements.txt | $(VENV)/.installed
	$(BIN)/pip install -q --disable-pip-version-check --upgrade --target $(FUZZ_DEPS) -r $<
	@touch $@

fuzz: deps $(FUZZ_DEPS)/.installed  ## Fuzz each parser for FUZZ_RUNS inputs (200000; the store a tenth).
	@for target in $(FUZZ_TARGETS); do \
	  runs=$(FUZZ_RUNS); [ $$target != store ] || runs=$$(( $(FUZZ_RUNS) / 10 )); \
	  PYTHONPATH=$(FUZZ_DEPS) $(BIN)/python fuzz/fuzz_$$target.py -atheris_runs=$$runs \
	    $(FUZZ_FLAGS); done

fuzz-short: deps $(FUZZ_DEPS)/.installed  ## The CI fuzz run: FUZZ_SHORT_RUNS (3000) inputs each.
	@$(MAKE) --no-print-directory fuzz FUZZ_RUNS=$(FUZZ_SHORT_RUNS)

clean:  ## Remove the venv and stamps (the lab is removed by lab-down).
	rm -rf $(VENV) .stamps .pytest_cache .ruff_cache $(FUZZ_DEPS)
