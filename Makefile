# Herald's build and test entry points. `make test` is what CI runs.

GO      ?= go
BIN     := bin/herald
# Flags for `make run`: the memory hub with every request logged.
RUN_FLAGS ?= --log-level debug

.PHONY: build run test testdeps fuzz bench cluster-bench soak fmt vet clean

build:
	$(GO) build -o $(BIN) ./cmd/herald

run: build
	$(BIN) serve $(RUN_FLAGS)

test: testdeps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz

# testdeps installs what the tests need besides Go and the machine's
# services: the npm ws package that internal/testkit/nodews drives.
testdeps:
	npm ci --prefix internal/testkit/nodews --no-audit --no-fund --loglevel=error

# Every fuzz target, each for FUZZTIME: a short run in `make test`, counted
# in executions because Go 1.26's fuzz coordinator can fail a run spuriously
# with "context deadline exceeded" at the end of a timed -fuzztime
# (go.dev/issue/75804). Run long with e.g. `make fuzz FUZZTIME=10m` (where
# that flake may show) or `FUZZTIME=5000000x`. Findings are written to the
# package's testdata/fuzz and fail the run; commit them as seeds.
FUZZTIME ?= 20000x
FUZZ_TARGETS := \
	./hub:FuzzParsePattern ./hub:FuzzParseCursor ./hub:FuzzDraftNormalize ./hub:FuzzPatternCovers ./hub:FuzzDeltaEnvelope \
	./transport/ws:FuzzFrameCutter ./transport/ws:FuzzClientMessage ./transport/ws:FuzzCompressedFrame \
	./transport/sse:FuzzLastEventID ./transport/sse:FuzzStateQuery ./transport/sse:FuzzPresenceQuery ./transport/sse:FuzzShapingQuery \
	./transport/httpapi:FuzzParseSingleFast ./transport/httpapi:FuzzParseActionFast ./transport/httpapi:FuzzParseControl \
	./internal/jsonenc:FuzzAppendString ./delta:FuzzDelta \
	./auth:FuzzCheckJWKSURL ./auth:FuzzJWKSBody ./auth:FuzzUpstreamGrants \
	./cmd/herald:FuzzConfigFile \
	./cmd/herald/internal/bench:FuzzInflate ./cmd/herald/internal/bench:FuzzUnquoteJSON ./cmd/herald/internal/bench:FuzzDeltaKeyed \
	./client:FuzzEnvelope ./client:FuzzStream \
	./outbox:FuzzParseURL

fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/herald-fuzz.log 2>&1 || { cat /tmp/herald-fuzz.log; exit 1; }; \
	done

# Where `make bench` runs its own server for the end-to-end scenario.
BENCH_ADDR ?= 127.0.0.1:18180

# bench: the hub's micro-benchmarks, then a short end-to-end fan-out (500
# WebSocket and SSE subscribers, 5 s) against a server of its own, started
# and stopped here. The report says deliveries/s, loss and latency.
bench: build
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 200ms ./hub/
	@$(BIN) serve --addr $(BENCH_ADDR) --log-level warn & pid=$$!; \
	trap 'kill $$pid 2>/dev/null' EXIT; \
	for i in $$(seq 100); do curl -sf http://$(BENCH_ADDR)/healthz >/dev/null && break; sleep 0.1; done; \
	$(BIN) bench --url http://$(BENCH_ADDR) --transport mixed --subscribers 500 --topics 5 --rate 200 --duration 5s

# cluster-bench: a cluster on one box (docs/benchmarks.md): NODES herald
# serve processes on one BROKER log (redis or nats), SUBSCRIBERS (half
# WebSocket, half SSE) from SHARDS herald bench processes, RATE publish
# requests/s for DURATION, and with KILL=1 the last node killed (SIGKILL)
# halfway: the summed report, loss, duplicates, order, latency and each
# node's RSS per connection. The default is the full 60,000-connection run,
# which wants a quiet box (and NODES=5 with KILL=1, so that no survivor
# holds more than a process may); e.g. SUBSCRIBERS=2000 RATE=50
# DURATION=5s for a smoke run. PROFILE=1 adds CPU profiles, NODE_FLAGS and
# BENCH_FLAGS extra flags (scripts/cluster-bench.sh).
BROKER      ?= redis
NODES       ?= 4
SUBSCRIBERS ?= 60000
SHARDS      ?= 4
TOPICS      ?= 10
RATE        ?= 600
DURATION    ?= 30s
KILL        ?= 0
cluster-bench: build
	BIN=$(BIN) BROKER=$(BROKER) NODES=$(NODES) SUBSCRIBERS=$(SUBSCRIBERS) SHARDS=$(SHARDS) TOPICS=$(TOPICS) \
		RATE=$(RATE) DURATION=$(DURATION) KILL=$(KILL) scripts/cluster-bench.sh

# soak: the reliability checks of docs/reliability.md at full size, each
# against a server process of its own: forced disconnects (1,000
# subscribers, 100,000 events), a stalled client's effect on the others'
# p99, a 10-minute soak sampling /metrics, and shutdowns under load. `make
# test` runs short versions of the same tests; these take about 20 minutes
# and run without -race, whose overhead would be what they measure.
# HERALD_SEED=N replays a run's random choices.
SOAK_TESTS := TestChaosDisconnects|TestStalledClient|TestSoak|TestShutdownUnderLoad
soak:
	HERALD_SOAK=1 $(GO) test -count=1 -v -timeout 40m -run '^($(SOAK_TESTS))$$' ./cmd/herald/

fmt:
	gofmt -s -w .

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
