# AgentFlow: `make run` and `make test` are the whole quick start (README.md).
# Every target installs the Debian packages it needs first (scripts/deps.sh; apt when root).
JOBS ?= $(shell nproc)
CTEST_ARGS ?=
SOURCES = $(shell git ls-files '*.cpp' '*.hpp' 2>/dev/null)

.PHONY: all deps build run test bench fmt fmt-check lint clean

all: build

deps:
	@scripts/deps.sh all

build:
	@scripts/deps.sh build
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

# The demo: a durable workflow on SQLite that fans out to 1,000 agents and joins
# (examples/plans/primes.yaml), then the audit chain of everything it did, verified.
DEMO_DIR ?= build/demo-data
run: build
	./build/release/apps/af run examples/plans/primes.yaml --data-dir $(DEMO_DIR) --progress
	./build/release/apps/af audit verify --data-dir $(DEMO_DIR)

test:
	@scripts/deps.sh test
	cmake --preset debug >/dev/null
	cmake --build --preset debug -j $(JOBS)
	ctest --preset debug $(CTEST_ARGS)

bench: build
	python3 bench/run_all.py --build build/release --update docs/benchmarks.md

fmt:
	clang-format -i $(SOURCES)

fmt-check:
	clang-format --dry-run --Werror $(SOURCES)

lint: fmt-check
	@scripts/deps.sh all
	cmake --preset debug >/dev/null
	run-clang-tidy -quiet -p build/debug $(filter %.cpp,$(filter-out examples/external-consumer/%,$(SOURCES)))

clean:
	rm -rf build
