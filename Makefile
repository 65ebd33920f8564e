# Gatecast — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/gatecast
PKGS    := ./...

.PHONY: all build run test test-short vet fuzz bench bench-compare loadtest loadtest-revoke loadtest-storm clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/gatecast

## run: build and start the broker on the embedded default (SQLite in ./data)
run: build
	./$(BIN) serve

## test: vet, the whole suite with the race detector, then the allocation
## and idle-memory tests (the race detector makes sync.Pool drop items and
## doubles the heap, so they skip under it)
test: vet
	$(GO) test -race -count=1 -timeout 12m $(PKGS)
	$(GO) test -count=1 -run 'Allocs$$|^TestIdleConnectionMemory$$' $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## fuzz: run every fuzz target briefly (FUZZTIME=30s for longer)
FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: hot-path micro-benchmarks in benchstat form (COUNT=6 for benchstat)
COUNT ?= 1
bench:
	$(GO) test -run '^$$' -bench . -benchmem -count $(COUNT) ./topic ./proto ./acl ./broker ./netpoll

## bench-compare: the same scenarios (fan-in 200->1, fan-out 1->2000, 1->1
## latency, 1->1 latency under fan-in load, 15,000 idle) against Gatecast,
## Mosquitto and NATS, in two tables: over WebSocket, each in its own
## protocol; then one MQTT 3.1.1 QoS 0 client for every broker (Gatecast over
## TCP and WebSocket, Mosquitto over TCP, NATS's MQTT listener; shorter
## ladders). Brokers and harness pinned to separate CPUs with taskset (2 CPUs
## or more); installs mosquitto and nats-server when missing (root); ~10 min.
## Tables on stdout, JSON in bin/bench-compare.json. One table only:
## ./bin/gatecast bench compare --only mqtt (or native).
bench-compare: build
	./$(BIN) bench compare --gatecast $(BIN) --json bin/bench-compare.json

## loadtest: start throwaway brokers and run the fleet scenarios against them
## (connect, idle, telemetry, command, churn, revoke, mixed, fanout, fanin:
## JSON reports and SVG charts; see docs/loadtest.md and docs/PERFORMANCE.md)
loadtest: build
	loadtest/scripts/run.sh $(BIN)

## loadtest-revoke: revocation latency per kind of rights change (loadtest revoke --kinds all,
## 2,000 sessions each) on one throwaway node; NODES=3 for a cluster on a throwaway Redis +
## Postgres (installed when missing, as root); see docs/loadtest.md
loadtest-revoke: build
	loadtest/scripts/revoke.sh $(BIN)

## loadtest-storm: 15,000 devices (N=...) with their own tokens reconnecting to a restarted
## 3-node cluster on a throwaway Redis + Postgres; OLD_BIN=path runs another build first
loadtest-storm: build
	loadtest/scripts/storm.sh $(BIN)

clean:
	rm -rf bin
