# pagewarp — post-copy live migration of memory with prefetching.
# `make demo` and `make test` are the whole set-up: each installs what it needs.

GO        ?= go
BIN       := bin/pagewarp
PKGS      := ./...
RACE_PKGS := ./faulthandler ./pageserver ./wire ./precopy ./hybrid ./metrics ./bench ./bench/report ./qemu/... ./internal/...
FUZZTIME  ?= 30s

.PHONY: all build test race demo bench fuzz lint chaos deps deps-prometheus deps-qemu clean

all: build

# deps fetches the Go modules (the only thing the build needs besides Go and gcc for cgo).
deps:
	$(GO) mod download

# deps-prometheus makes sure the Prometheus server and promtool are installed (Debian's package
# prometheus), with apt-get when they are missing and we are root. Otherwise it says why and goes
# on: the tests that run them skip saying so, and lint fails.
deps-prometheus:
	@if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's prometheus (server and promtool)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	else \
		echo "prometheus or promtool is missing and cannot be installed here (needs root and apt-get):"; \
		echo "  the Prometheus tests will skip; make lint will fail"; \
	fi

build: deps
	$(GO) build -o $(BIN) ./cmd/pagewarp

# test runs every test (real userfaultfd, real sockets, re-executed target processes),
# then the concurrent packages again under the race detector.
test: deps deps-prometheus deps-qemu
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

race: deps deps-qemu
	$(GO) test -count=1 -race $(RACE_PKGS)

# demo migrates a 256 MiB demo region over loopback and prints a comparison table
# (post-copy, fault latency, prefetching predictors, pre-copy of a live region).
demo: build
	./$(BIN) demo

# bench runs every suite (faults, prefetch, precopy, hybrid, qemu; tables, JSON, CSV and plots in
# bench-results/all-TIMESTAMP/) and the package benchmarks: the figures docs/benchmarks.md quotes.
bench: build deps-qemu
	./$(BIN) bench all
	$(GO) test -run '^$$' -bench . -benchtime 2x ./wire ./pageserver
	$(GO) test -run '^$$' -bench . -benchtime 5x ./precopy
	$(GO) test -run '^$$' -bench . ./predictor

# fuzz runs every decoder's fuzz target for FUZZTIME each.
fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./wire
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./wire
	$(GO) test -run '^$$' -fuzz '^FuzzReadTrace$$' -fuzztime $(FUZZTIME) ./predictor
	$(GO) test -run '^$$' -fuzz '^FuzzDecide$$' -fuzztime $(FUZZTIME) ./hybrid
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./qemu/returnpath
	$(GO) test -run '^$$' -fuzz '^FuzzReader$$' -fuzztime $(FUZZTIME) ./qemu/returnpath
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./qemu/qmp
	$(GO) test -run '^$$' -fuzz '^FuzzHandoverState$$' -fuzztime $(FUZZTIME) ./bench
	$(GO) test -run '^$$' -fuzz '^FuzzCheck$$' -fuzztime $(FUZZTIME) ./qemu/guest

# lint also runs `promtool check metrics` over the real expositions of serve and of receive during a
# migration (and of the pre-copy recorder): any complaint fails.
lint: deps deps-prometheus
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	PAGEWARP_REQUIRE_PROMETHEUS=1 $(GO) test -count=1 -run '^TestPromtoolCheckMetrics$$' ./cmd/pagewarp

# chaos runs the fault-injection suite: CHAOS_TRIALS live migrations, one fault each (drops, a killed source,
# stalls, slow and reordered streams, corrupted bytes), seeded by CHAOS_SEED; it ends with "chaos: N passed, N failed".
CHAOS_TRIALS ?= 100
CHAOS_SEED   ?= 1
chaos: build
	./$(BIN) chaos --trials $(CHAOS_TRIALS) --fault-seed $(CHAOS_SEED)

clean:
	rm -rf bin

# deps-qemu installs Debian's qemu-system-x86 (QEMU 7.2, TCG) for the real-QEMU tests in ./qemu,
# only when qemu-system-x86_64 is missing and only as root; otherwise it says what to do.
deps-qemu:
	@if command -v qemu-system-x86_64 >/dev/null 2>&1; then \
		echo "deps-qemu: $$(qemu-system-x86_64 --version | head -1)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "deps-qemu: installing qemu-system-x86"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86; \
	else \
		echo "deps-qemu: qemu-system-x86_64 is missing and this is not root with apt-get:"; \
		echo "deps-qemu:   run 'sudo apt-get install --no-install-recommends qemu-system-x86'; the real-QEMU tests in ./qemu skip without it"; \
	fi
