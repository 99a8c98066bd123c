# txcoord — see README.md. `make test` and `make demo` are the two commands.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/bin
TOOLS := $(CURDIR)/.bin
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: all build proto proto-tools db-up db-down browser test unit-test demo vet clean fuzz-short dev-certs chaos chaos-short console-screenshots

# Fuzz targets run briefly by `make test` (FUZZTIME each); longer runs:
# make fuzz-short FUZZTIME=5m. The default is a count of executions, not a
# duration: with a duration, Go 1.26's fuzzing engine can report a bare
# "context deadline exceeded" failure when its deadline races a busy worker
# (golang/go#75804, fixed in Go 1.27); a count has no deadline to race.
FUZZTIME ?= 10000x
FUZZ_TARGETS := node:FuzzConfig server:FuzzRunRequest coordinator:FuzzParseGID internal/drift:FuzzParse wal:FuzzSealedEncoding

all: build

build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/txcoord ./cmd/txctl ./cmd/txbench ./cmd/txdemo ./cmd/txcerts

proto-tools:
	@command -v protoc >/dev/null || (apt-get update -qq && apt-get install -y -qq protobuf-compiler)
	@mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

proto: proto-tools
	PATH=$(TOOLS):$$PATH protoc -I proto --go_out=proto --go_opt=paths=source_relative \
		--go-grpc_out=proto --go-grpc_opt=paths=source_relative proto/txcoord/v1/*.proto

db-up:
	scripts/db-up.sh

db-down:
	scripts/db-down.sh

vet:
	$(GO) vet ./...

# Headless Chromium for the web console's browser tests (test/console):
# Debian packages chromium and chromium-driver, installed when missing.
browser:
	scripts/chromium.sh

unit-test:
	$(GO) test -race -count=1 ./...

# The web console's screenshots in docs/console (shown in the README), taken
# by its browser tests; `make test` writes them under .data/console instead.
console-screenshots: build db-up browser
	set -a; eval "$$(scripts/pg.sh env)"; eval "$$(scripts/surreal.sh env)"; set +a; \
	TXCOORD_SCREENSHOT_DIR=$(CURDIR)/docs/console $(GO) test -count=1 ./test/console/

test: build db-up browser
	set -a; eval "$$(scripts/pg.sh env)"; eval "$$(scripts/surreal.sh env)"; set +a; \
	$(GO) vet ./... && $(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) fuzz-short
	$(MAKE) chaos-short

fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) ./$$pkg || exit 1; \
	done

# Fault injection (chaos/README.md): its own PostgreSQL and SurrealDB, a
# 3-node cluster behind per-link proxies, seeded nemeses, checkers.
chaos: build
	$(GO) run ./cmd/txchaos --duration=$${CHAOS_DURATION:-10m} --report=.data/chaos/report.json

chaos-short: build
	$(GO) run ./cmd/txchaos --short --report=.data/chaos/report-short.json

# A development CA and certificates for nodes n1..n3 and clients app, ops.
dev-certs:
	$(GO) run ./cmd/txcerts --dir .data/certs

demo: build db-up
	scripts/demo.sh

clean:
	rm -rf $(BIN)

# make bench: txbench against a 3-node cluster on this machine (all three
# workloads, concurrency sweep, 3 A/B rounds against the non-atomic baseline
# and the floor, the adapters without a coordinator, and the phases of 200
# sampled two-phase transactions per side; about 27 minutes).
# Report in .data/bench/out (table, JSON, PNG); the last
# lines are `bench: workload=W c=32 ...`. bench-short: one quick round.
.PHONY: bench bench-short
BENCH_OUT := $(CURDIR)/.data/bench/out
bench: build db-up
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; set -a; eval "$$(scripts/pg.sh env)"; eval "$$(scripts/surreal.sh env)"; set +a; \
	$(BIN)/txbench --start --nodes 3 --txcoord $(BIN)/txcoord --work-dir $(CURDIR)/.data/bench/run \
		--workload pg-pg,pg-surreal,single --concurrency 1,8,16,32 --decision-concurrency 1 \
		--rounds 3 --duration 10s --warmup 2s --floor --phases 200 \
		--json $(BENCH_OUT)/bench.json --chart $(BENCH_OUT)/bench.png | tee $(BENCH_OUT)/bench.txt

bench-short: build db-up
	@mkdir -p $(BENCH_OUT)
	set -o pipefail; set -a; eval "$$(scripts/pg.sh env)"; eval "$$(scripts/surreal.sh env)"; set +a; \
	$(BIN)/txbench --start --nodes 3 --txcoord $(BIN)/txcoord --work-dir $(CURDIR)/.data/bench/run \
		--workload pg-pg,pg-surreal,single --concurrency 1,32 --decision-concurrency 1 \
		--rounds 1 --duration 5s --warmup 1s --floor --phases 200 \
		--json $(BENCH_OUT)/bench-short.json --chart $(BENCH_OUT)/bench-short.png | tee $(BENCH_OUT)/bench-short.txt
