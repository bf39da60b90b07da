# authguard — see README.md. `make demo` and `make test` are all a fresh
# Debian machine with Go needs.
GO ?= go
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test test-real build images bench bench-compare bench-replay soak lint redis-server chromium

## demo: run the whole loop (Redis, fake Loki, login app, gateway, daemon) against a scripted attack
demo: redis-server
	@echo "make demo: building bin/authguard, bin/authguard-gateway and bin/authguard-demo (a first build fetches the Go modules and compiles them: a few minutes; later builds take seconds)"
	$(GO) build -o bin/ ./cmd/authguard ./cmd/authguard-gateway ./cmd/authguard-demo
	bin/authguard-demo

## test: formatting, vet, and every test (unit and e2e) with the race detector
test: redis-server chromium
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

## test-real: the suites that need real servers: the Loki facts, the read
## soaks, the manifests against a real kube-apiserver and etcd, the whole
## e2e suite against a real Loki that the tests start on loopback from
## $(AUTHGUARD_TEST_TOOLS) (default ../shared/tools), and the
## gateway-to-block latency over 100 attacks
AUTHGUARD_TEST_TOOLS ?= $(abspath ../shared/tools)
test-real: redis-server
	@for f in loki.gz etcd.gz kube-apiserver.gz; do test -f "$(AUTHGUARD_TEST_TOOLS)/$$f" || { echo "test-real: no $$f in AUTHGUARD_TEST_TOOLS=$(AUTHGUARD_TEST_TOOLS)"; exit 1; }; done
	AUTHGUARD_TEST_TOOLS=$(AUTHGUARD_TEST_TOOLS) AUTHGUARD_SOAK_DURATION=$${AUTHGUARD_SOAK_DURATION:-2m} \
	  $(GO) test -tags real -count=1 -timeout 20m -run Real -v ./detector/loki/...
	AUTHGUARD_TEST_TOOLS=$(AUTHGUARD_TEST_TOOLS) $(GO) test -tags real -count=1 -timeout 10m -run Real ./deploy/...
	AUTHGUARD_TEST_TOOLS=$(AUTHGUARD_TEST_TOOLS) $(GO) test -tags real -race -count=1 -timeout 20m ./e2e/
	AUTHGUARD_TEST_TOOLS=$(AUTHGUARD_TEST_TOOLS) \
	  $(GO) test -tags real -count=1 -run '^$$' -bench FailedLoginToBlock -benchtime 100x ./e2e/

## build: static binaries in bin/, as the Dockerfile builds them
build:
	@echo "make build: static binaries into bin/ (a first build fetches the Go modules: a few minutes)"
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o bin/ ./cmd/authguard ./cmd/authguard-gateway

## images: build both images from deploy/Dockerfile as REGISTRY/authguard:TAG
## and REGISTRY/authguard-gateway:TAG, and push them with PUSH=1; CONTAINER
## may be podman or buildah, which need no daemon
REGISTRY ?= ghcr.io/authguard
TAG ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
CONTAINER ?= docker
images:
	$(CONTAINER) build -f deploy/Dockerfile --target authguard -t $(REGISTRY)/authguard:$(TAG) .
	$(CONTAINER) build -f deploy/Dockerfile --target gateway -t $(REGISTRY)/authguard-gateway:$(TAG) .
	@if [ "$(PUSH)" = 1 ]; then \
	  $(CONTAINER) push $(REGISTRY)/authguard:$(TAG) && $(CONTAINER) push $(REGISTRY)/authguard-gateway:$(TAG); fi
	@echo "images: $(REGISTRY)/authguard:$(TAG) $(REGISTRY)/authguard-gateway:$(TAG)"
	@echo "set them in your overlay's images: (newName: $(REGISTRY)/authguard, newTag: \"$(TAG)\"), see README"

## bench: the benchmarks, with allocations, on one core (-cpu 1): the code
## under test gets one, and the e2e benchmarks leave the other to their
## redis-server, as production gives Redis its own
bench: redis-server
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 ./...

## bench-replay: the whole replay process on a 210,000-line attack against
## fail2ban-regex on the same lines when it is installed (apt-get install
## fail2ban): lines/s, peak RSS and the ratio of their times; and the peak
## RSS of 1 GiB of that attack over later days against its first 100 MiB.
## Not run by CI (it writes 1.1 GiB to the temporary directory).
bench-replay:
	$(GO) test -run '^$$' -bench 'ReplayAgainstFail2ban|ReplayMemoryFollowsKeys' -benchtime 3x -timeout 30m ./cmd/authguard/

# chromium is needed by the test of replay's review page in a real browser;
# install Debian's when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "chromium not found; installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# redis-server is needed by the demo and the e2e tests; install it when missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found; installing it with apt-get"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server; }

## bench-compare: the benchmarks of revision BASE against the working tree,
## ROUNDS rounds interleaved (base, tree, base, ...), each test binary on
## CPU 0 and its redis-server on CPU 1, as benchstat tables; a noisy VM
## moves unchanged code by 10-30 %, the interleaving and pinning take most
## of that out. Not run by CI. e.g. make bench-compare BASE=bcfd485 PKGS=./e2e/ BENCH=Block;
## from another checkout (the tree compared): make -f /path/to/Makefile bench-compare
BASE ?= HEAD
ROUNDS ?= 8
PKGS ?= ./...
BENCH ?= .
BENCHTIME ?= 300ms
bench-compare: redis-server
	@set -e; tmp=$$(mktemp -d); tree=$$(pwd); \
	trap 'git worktree remove --force "$$tmp/base" >/dev/null 2>&1 || true; rm -rf "$$tmp"' EXIT; \
	git worktree add -f --detach "$$tmp/base" $(BASE) >/dev/null 2>&1; \
	mkdir -p "$$tmp/pin"; printf '#!/bin/sh\nexec taskset -c 1 %s "$$@"\n' "$$(command -v redis-server)" > "$$tmp/pin/redis-server"; \
	chmod +x "$$tmp/pin/redis-server"; \
	for side in base tree; do src="$$tmp/base"; [ $$side = tree ] && src="$$tree"; mkdir -p "$$tmp/$$side.bin"; \
	  for d in $$(cd "$$src" && $(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.Dir}}{{end}}' $(PKGS)); do \
	    rel=$${d#$$src/}; [ "$$d" = "$$src" ] && rel=.; \
	    (cd "$$d" && $(GO) test -c -o "$$tmp/$$side.bin/$$(echo $$rel | tr / %).test" .) || exit 1; done; done; \
	echo "bench-compare: $(BASE) against the working tree, $(ROUNDS) rounds"; \
	for r in $$(seq $(ROUNDS)); do for side in base tree; do src="$$tmp/base"; [ $$side = tree ] && src="$$tree"; \
	  for bin in "$$tmp/$$side.bin"/*.test; do rel=$$(basename "$$bin" .test | tr % /); \
	    (cd "$$src/$$rel" && PATH="$$tmp/pin:$$PATH" taskset -c 0 "$$bin" -test.run '^$$' -test.bench '$(BENCH)' \
	      -test.benchtime $(BENCHTIME) -test.benchmem -test.cpu 1 >> "$$tmp/$$side.txt" 2>&1) || { cat "$$tmp/$$side.txt"; exit 1; }; \
	  done; done; echo "round $$r done"; done; \
	$(GO) -C $(dir $(abspath $(firstword $(MAKEFILE_LIST)))) tool benchstat base="$$tmp/base.txt" tree="$$tmp/tree.txt"

## soak: 10 minutes of 20,000 lines/s through the fake Loki with a forced reconnect every 5 s; every line must arrive once (not run by CI; AUTHGUARD_SOAK=2m for a shorter run)
soak:
	$(GO) test -tags soak -run Soak -v -timeout 30m ./detector/loki/

## lint: staticcheck (fetched through the Go module proxy)
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
