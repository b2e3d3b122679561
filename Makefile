# Sentinel-2 Pipeline (QGIS plugin): development tasks. Every target works from a clean clone; `test`, `demo`,
# `bench` and `lint` install what is missing first (Debian packages as root, then the .venv).
#
#   make deps      install what is missing (apt-get as root; .venv with --system-site-packages)
#   make test      every test (engine, pytest-qgis, headless qgis_process) on both lanes: this machine's QGIS
#                  (Debian 12: 3.22) and the LTR lane (QGIS 3.44 in a Debian testing chroot, as root)
#   make test-host the suite on this machine's QGIS only
#   make test-lts  the suite on QGIS 3.44 LTR only (scripts/lts.sh; the chroot is built once under build/lts)
#   make demo      the main job, headless, offline: tiles -> search -> download -> sen2cor / L3A mosaic against
#                  local replicas of the services, on the bundled sample areas (data/demo/)
#   make demo-live the same chain against the real services that need no account (Earth Search, DLR; internet)
#   make bench     every benchmarks/bench_*.py
#   make package   dist/sentinel2_pipeline-<version>.zip for plugins.qgis.org
#   make deploy    install that zip into the local QGIS profile (QGIS_PROFILE_DIR=...)
#   make lint      ruff
#   make clean     remove build products (distclean: the venv too)

SHELL := /bin/bash
.DEFAULT_GOAL := help

PLUGIN := sentinel2_pipeline
SYS_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
VERSION := $(shell sed -n 's/^version[[:space:]]*=[[:space:]]*//p' metadata.txt | tr -d '\r')
DIST ?= dist
ZIP := $(DIST)/$(PLUGIN)-$(VERSION).zip
QGIS_PROFILE_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
PYTEST_ARGS ?=
JUNIT := build/test-results/junit.xml
JUNIT_LTS := build/test-results/junit-lts.xml

export QT_QPA_PLATFORM := offscreen
export SYS_PYTHON VENV

.PHONY: help deps test test-host test-lts demo demo-live bench package deploy lint clean distclean

help:
	@sed -n 's/^#   make /  make /p' Makefile

deps:
	@bash scripts/deps.sh

# Both lanes run even when the first fails; the target fails when either does. pytest exits 5 when it collected
# nothing, which fails a lane too.
test:
	@host=0; lts=0; \
	$(MAKE) --no-print-directory test-host || host=$$?; \
	$(MAKE) --no-print-directory test-lts || lts=$$?; \
	echo "test lanes: host QGIS exit $$host, QGIS LTR exit $$lts"; \
	[ $$host = 0 ] && [ $$lts = 0 ]

test-host: deps
	@mkdir -p $(dir $(JUNIT)) && mkdir -p -m 700 build/runtime-pytest
	XDG_RUNTIME_DIR=$(CURDIR)/build/runtime-pytest $(PYTHON) -m pytest --junitxml=$(JUNIT) $(PYTEST_ARGS)

test-lts:
	JUNIT_LTS=$(JUNIT_LTS) bash scripts/lts.sh test $(PYTEST_ARGS)

demo: deps
	@bash scripts/demo.sh

demo-live: deps
	@bash scripts/demo.sh --live

bench: deps
	@set -e; for bench in benchmarks/bench_*.py; do \
		echo "=== $$bench"; \
		$(PYTHON) $$bench; \
	done

package:
	@$(SYS_PYTHON) scripts/package.py --dist $(DIST) $(if $(REPOSITORY),--repository $(REPOSITORY))

deploy: package
	@test -n "$(QGIS_PROFILE_DIR)" || { echo "QGIS_PROFILE_DIR is empty" >&2; exit 1; }
	@mkdir -p "$(QGIS_PROFILE_DIR)/python/plugins"
	@rm -rf "$(QGIS_PROFILE_DIR)/python/plugins/$(PLUGIN)"
	@$(SYS_PYTHON) -m zipfile -e $(ZIP) "$(QGIS_PROFILE_DIR)/python/plugins/"
	@echo "installed $(PLUGIN) $(VERSION) into $(QGIS_PROFILE_DIR)/python/plugins/$(PLUGIN)"
	@echo "restart QGIS and enable it in Plugins > Manage and Install Plugins (headless: qgis_process.bin plugins enable $(PLUGIN))"

lint: deps
	$(VENV)/bin/ruff check .

# The LTR root's mounts are undone first: deleting through a bind mount of the checkout would delete the checkout.
clean:
	@if [ -d build/lts/root ]; then bash scripts/lts.sh umount; fi
	rm -rf --one-file-system build dist .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
