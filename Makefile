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

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 200ms ./hub/

fmt:
	gofmt -s -w .

vet:
	$(GO) vet ./...

clean:
	rm -rf bin
