# fleetops.mcp: every set-up step is in these targets; run them as root on
# Debian 12. `make test` is what CI runs (through .ci/run).
SHELL := /bin/bash
.DEFAULT_GOAL := help
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

DEMO_SCENARIO ?= fleet
export FLEETOPS_CACHE := $(CURDIR)/.cache

.PHONY: help test lint sanity unit package molecule demo demo-destroy bench venv host images clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

test: ## set up everything, then lint, ansible-test sanity, unit tests, packaging and all Molecule scenarios
	tests/harness/run.sh

lint: ## ruff, yamllint and ansible-lint (production profile)
	tests/harness/run.sh venv lint

sanity: ## ansible-test sanity on plugins/ and meta/ (a copy under .cache/sanity)
	tests/harness/run.sh venv sanity

unit: ## pytest unit tests (and promtool's alert rule tests)
	tests/harness/setup-host.sh promtool
	tests/harness/run.sh venv unit

package: ## build the collection tarball and install it offline
	tests/harness/run.sh venv package

molecule: ## Molecule scenarios only (SCENARIOS="a b" to choose)
	tests/harness/run.sh host venv images molecule

host: ## host packages, dockerd and the shared apt cache
	tests/harness/setup-host.sh

venv: ## the pinned Python tool chain in .venv
	tests/harness/venv.sh

images: host ## Debian base images: systemd test hosts (12, 13) and the MCP runtime (13)
	FLEETOPS_APT_PROXY=http://127.0.0.1:3142 tests/harness/build-base-images.sh

demo: ## create the demo fleet (inventories/local), run site.yml on it, prove it with MCP calls; it stays running
	tests/harness/run.sh host venv images
	molecule create -s $(DEMO_SCENARIO)
	molecule prepare -s $(DEMO_SCENARIO) --force
	set -o pipefail; molecule converge -s $(DEMO_SCENARIO) 2>&1 | tee $(FLEETOPS_CACHE)/demo-converge.log
	python tests/harness/demo_summary.py

bench: ## benchmarks: rebuilds the demo from bare containers and measures it, then compares the stdio bridges (about 45 minutes); prints two tables
	tests/harness/run.sh host venv images
	python bench/fleet_bench.py
	python bench/stdio_bridge_bench.py

demo-destroy: ## remove the demo hosts
	tests/harness/run.sh venv
	molecule destroy -s $(DEMO_SCENARIO)

clean: ## remove build and test leftovers (not the venv or images)
	rm -rf .pytest_cache fleetops-mcp-*.tar.gz
