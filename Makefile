# Herald's build and test entry points. `make test` is what CI runs.

GO      ?= go
BIN     := bin/herald
# Flags for `make run`: the memory hub with every request logged.
RUN_FLAGS ?= --log-level debug

.PHONY: build run test bench fmt vet clean

build:
	$(GO) build -o $(BIN) ./cmd/herald

run: build
	$(BIN) serve $(RUN_FLAGS)

test:
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 20m ./...

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

fmt:
	gofmt -s -w .

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
