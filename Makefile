# tailor — build, test and demo entry points. `make test` is what CI runs
# (.ci/run); it installs its own dependencies first (scripts/deps.sh).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

GO ?= go
# Packages whose tests run with the race detector (concurrency-heavy);
# every other package runs without it.
RACE_PKGS ?= ./featurestore/... ./serving/...
# End-to-end tests of concurrent pipelines outside RACE_PKGS, run a second
# time with the race detector: batch scoring's fetch/model/write stages and
# export cancellation.
RACE_E2E ?= -run 'Score|Cancel' ./cmd/tailor/
TEST_TIMEOUT ?= 20m
# make test ends with the demo on a small world (test-demo), so that
# scripts/demo.sh cannot break unseen; about 25 s at 5000 customers.
TEST_DEMO_CUSTOMERS ?= 5000
BENCH_OUT ?= benchmarks/results.txt
BENCH_RESULTS ?= benchmarks/out

# Where scripts/deps.sh puts ONNX Runtime; tests, benchmarks and the demo
# load the library from ONNXRUNTIME_LIB.
TAILOR_CACHE ?= $(HOME)/.cache/tailor
ONNXRUNTIME_LIB ?= $(TAILOR_CACHE)/onnxruntime/libonnxruntime.so.1
export TAILOR_CACHE ONNXRUNTIME_LIB

.PHONY: build deps test test-demo demo bench soak generate check-generated lint

build:
	$(GO) build -o bin/tailor ./cmd/tailor

deps:
	bash scripts/deps.sh

# go vet, then a gofmt check that lists the files needing formatting.
define LINT
	$(GO) vet ./...
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*' -not -path './vendor/*')); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt: these files are not formatted (run gofmt -w on them):" >&2; \
		echo "$$unformatted" >&2; \
		exit 1; \
	fi
endef

lint:
	$(LINT)

test: deps check-generated
	$(LINT)
	@race=$$($(GO) list $(RACE_PKGS)); \
	rest=$$($(GO) list ./... | grep -vxF -f <(printf '%s\n' $$race) || true); \
	if [ -n "$$race" ]; then \
		echo "go test -race -timeout $(TEST_TIMEOUT) $(RACE_PKGS)"; \
		$(GO) test -race -timeout $(TEST_TIMEOUT) $$race; \
	fi; \
	if [ -n "$$rest" ]; then \
		echo "go test -timeout $(TEST_TIMEOUT) (the other packages)"; \
		$(GO) test -timeout $(TEST_TIMEOUT) $$rest; \
	fi; \
	if [ -n "$(RACE_E2E)" ]; then \
		echo "go test -race $(RACE_E2E)"; \
		$(GO) test -race -timeout $(TEST_TIMEOUT) $(RACE_E2E); \
	fi
	$(MAKE) --no-print-directory test-demo

demo: deps build
	bash scripts/demo.sh

# The whole demo (scripts/demo.sh: its own ClickHouse in a temporary
# TAILOR_HOME, removed after) on $(TEST_DEMO_CUSTOMERS) customers, with the
# bin/tailor of this tree; it fails like make demo does, quality gate
# included.
test-demo: build
	DEMO_CUSTOMERS=$(TEST_DEMO_CUSTOMERS) bash scripts/demo.sh

# make bench runs every benchmark; each records its figures (floor, ratio,
# target) into $(BENCH_RESULTS), and the report turns them into
# benchmarks/RESULTS.md with SVG latency histograms in benchmarks/plots.
bench: deps
	mkdir -p $(dir $(BENCH_OUT))
	rm -rf $(BENCH_RESULTS)
	BENCH_RESULTS=$(abspath $(BENCH_RESULTS)) $(GO) test -run '^$$' -bench . -benchmem -timeout $(TEST_TIMEOUT) ./... | tee $(BENCH_OUT)
	$(GO) run ./benchmarks/report -in $(BENCH_RESULTS) -out benchmarks/RESULTS.md

# make soak runs one tailor serve under a steady mixed load (GetOnlineFeatures,
# Push, Predict, NextBestAction) against a private ClickHouse for
# SOAK_DURATION, and fails when a request fails or the server's RSS or
# goroutines grow after the warm-up (benchmarks/soak; its flags: SOAK_FLAGS,
# e.g. SOAK_FLAGS='-rate 800 -online-memory 32MiB'). Minutes long: not part
# of make test. The summary goes to $(SOAK_OUT), the samples and the
# server's log beside it.
SOAK_DURATION ?= 5m
SOAK_FLAGS ?=
SOAK_OUT ?= benchmarks/out/soak.md

soak: deps build
	$(GO) run ./benchmarks/soak -tailor bin/tailor -duration $(SOAK_DURATION) -out $(SOAK_OUT) $(SOAK_FLAGS)

# Generated code (proto/gen) is committed; buf and the protoc plugins run
# through `go tool`, pinned in go.mod.
generate:
	cd proto && $(GO) tool buf lint && $(GO) tool buf generate

# check-generated regenerates and fails when the committed code was stale.
check-generated: generate
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		if ! git diff --quiet -- proto/gen || [ -n "$$(git ls-files --others --exclude-standard -- proto/gen)" ]; then \
			echo "proto/gen is stale: run 'make generate' and commit the result" >&2; \
			git status --short -- proto/gen >&2; \
			exit 1; \
		fi; \
	fi
