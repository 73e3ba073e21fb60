# quackfs developer tasks. `make help` lists them.
#
# Tests that need PostgreSQL/S3 read QUACKFS_TEST_PG_URL, QUACKFS_TEST_S3_BUCKET and the AWS_*
# variables; `make services-up` starts throwaway servers, and `make test` / `make test-fast`
# then pick up their env file by themselves.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO        ?= cargo
QUACKFS      ?= target/release/quackfs
DUCKDB       ?= duckdb
DB           ?= quickstart
FUSE_DIR     ?= /tmp/fuse
SERVICES_DIR ?= /tmp/quackfs-services

.DEFAULT_GOAL := build
.PHONY: help build test test-fast fmt clippy deps services-up services-down services-status \
        run load bench clean

# Export the services' variables when they are up (a stale env file is ignored).
define load_services_env
if [ -f "$(SERVICES_DIR)/env" ] && bash scripts/services.sh status "$(SERVICES_DIR)" >/dev/null 2>&1; then \
    echo "make: using PostgreSQL/S3 from $(SERVICES_DIR)/env"; \
    set -a; . "$(SERVICES_DIR)/env"; set +a; \
elif [ -z "$${QUACKFS_TEST_PG_URL:-}" ]; then \
    echo "make: no test services (make services-up): PostgreSQL/S3 tests will skip"; \
fi;
endef

help:
	@echo "make build          cargo build --release"
	@echo "make test           fmt check + clippy -D warnings + cargo test (uses services if up)"
	@echo "make test-fast      cargo test only"
	@echo "make fmt | clippy   format the code | lint it"
	@echo "make deps           install fuse3, duckdb CLI, SeaweedFS (scripts/install-deps.sh)"
	@echo "make services-up    throwaway PostgreSQL + S3 in $(SERVICES_DIR) (services-down, services-status)"
	@echo "make run            build, init '$(DB)' if missing, mount it at $(FUSE_DIR) (foreground)"
	@echo "make load           load 1M rows into $(FUSE_DIR)/$(DB).duckdb (scripts/load.sql)"
	@echo "make bench          bash bench/run.sh"
	@echo "make clean          cargo clean"

build:
	$(CARGO) build --release

test:
	@$(load_services_env) \
	set -x; \
	$(CARGO) fmt --all -- --check; \
	$(CARGO) clippy --all-targets -- -D warnings; \
	$(CARGO) test --no-fail-fast -- --include-ignored

test-fast:
	@$(load_services_env) \
	set -x; \
	$(CARGO) test --no-fail-fast -- --include-ignored

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

deps:
	bash scripts/install-deps.sh

services-up:
	bash scripts/services.sh up "$(SERVICES_DIR)"

services-down:
	bash scripts/services.sh down "$(SERVICES_DIR)"

services-status:
	bash scripts/services.sh status "$(SERVICES_DIR)"

# Foreground mount: Ctrl-C (or `quackfs umount $(FUSE_DIR)`) ends it.
run: build
	@if ! ls "$(FUSE_DIR)" >/dev/null 2>&1 && grep -qs " $(FUSE_DIR) " /proc/mounts; then \
	    echo "make: unmounting stale mount at $(FUSE_DIR)"; \
	    fusermount3 -u "$(FUSE_DIR)" || umount -l "$(FUSE_DIR)"; \
	fi
	mkdir -p "$(FUSE_DIR)"
	@if out=$$("$(QUACKFS)" init "$(DB)" 2>&1); then \
	    echo "$$out"; \
	elif grep -q "already exists" <<<"$$out"; then \
	    echo "make: database $(DB) already exists"; \
	else \
	    echo "$$out" >&2; exit 1; \
	fi
	"$(QUACKFS)" mount "$(DB)" "$(FUSE_DIR)"

load:
	$(DUCKDB) "$(FUSE_DIR)/$(DB).duckdb" < scripts/load.sql

bench:
	bash bench/run.sh

clean:
	$(CARGO) clean
