# pagewarp — post-copy live migration of memory with prefetching.
# `make demo` and `make test` are the whole set-up: each installs what it needs.

GO        ?= go
BIN       := bin/pagewarp
PKGS      := ./...
RACE_PKGS := ./faulthandler ./pageserver ./wire ./precopy ./hybrid ./metrics ./bench ./internal/...
FUZZTIME  ?= 30s

.PHONY: all build test race demo bench fuzz lint deps clean

all: build

# deps fetches the Go modules (the only thing the build needs besides Go and gcc for cgo).
deps:
	$(GO) mod download

build: deps
	$(GO) build -o $(BIN) ./cmd/pagewarp

# test runs every test (real userfaultfd, real sockets, re-executed target processes),
# then the concurrent packages again under the race detector.
test: deps
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

race: deps
	$(GO) test -count=1 -race $(RACE_PKGS)

# demo migrates a 256 MiB demo region over loopback and prints a comparison table
# (post-copy, fault latency, prefetching predictors, pre-copy of a live region).
demo: build
	./$(BIN) demo

# bench prints the figures that docs/benchmarks.md quotes.
bench: build
	./$(BIN) bench faults --json
	./$(BIN) bench precopy --json
	$(GO) test -run '^$$' -bench . -benchtime 2x ./wire ./pageserver
	$(GO) test -run '^$$' -bench . -benchtime 5x ./precopy
	$(GO) test -run '^$$' -bench . ./predictor

# fuzz runs every decoder's fuzz target for FUZZTIME each.
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./wire
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./wire
	$(GO) test -run '^$$' -fuzz '^FuzzReadTrace$$' -fuzztime $(FUZZTIME) ./predictor
	$(GO) test -run '^$$' -fuzz '^FuzzDecide$$' -fuzztime $(FUZZTIME) ./hybrid

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf bin
