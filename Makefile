# The front door: `make run` starts the daemon, `make test` runs the tests.
# `make help` lists every target.

SHELL       := /bin/bash
GO          ?= go
BIN         := $(CURDIR)/bin
LISTEN      ?= :9000
DATA_DIR    ?= ./var
# SQLite (github.com/mattn/go-sqlite3) needs cgo.
export CGO_ENABLED := 1
# The version every binary prints for --version and the agent reports:
# git describe, once, unless given as make VERSION=v1.2.3.
ifneq ($(origin VERSION),command line)
VERSION     := $(shell git describe --tags --always --dirty 2>/dev/null)
endif
GO_LDFLAGS  := $(if $(VERSION),-X github.com/attestation/attestation/internal/version.Version=$(VERSION))

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the Debian packages the build needs (gcc, libc and OpenSSL headers for cgo), when missing
	@tools/deps.sh build

.PHONY: test-deps
test-deps: deps ## Install what the integration tests use (swtpm, QEMU and a kernel, iPXE, OVMF, TFTP and DHCP clients, perfdhcp, systemd-analyze, PostgreSQL), when missing
	@tools/deps.sh test

.PHONY: build
build: deps ## Build attestationd and attestation into bin/
	$(GO) build -ldflags='$(GO_LDFLAGS)' -o $(BIN)/ ./controlplane/cmd/attestationd ./cli/cmd/attestation

.PHONY: build-with
build-with: deps ## Build attestationd and attestation into bin/ with the extensions of WITH too ('example.com/x/ext@v1.2.0 ../my-ext'; attestation-build)
	$(GO) run ./extensions/cmd/attestation-build --stamp '$(VERSION)' --output $(BIN) $(foreach w,$(WITH),--with '$(w)')

.PHONY: agent
agent: ## Build the static attestation-agent (CGO_ENABLED=0) into bin/ and print its size
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w $(GO_LDFLAGS)' -o $(BIN)/attestation-agent ./agent/cmd/attestation-agent
	@stat -c '%n: %s bytes' $(BIN)/attestation-agent

# The .deb and the image ship static binaries: SQLite's cgo linked with
# glibc statically (the image has no libc; the package depends on none),
# Go's own DNS resolver and user lookup (netgo, osusergo, which static
# glibc cannot do), no SQLite extension loading (it would need dlopen).
STATIC_TAGS    := netgo,osusergo,sqlite_omit_load_extension
DIST           ?= $(CURDIR)/dist
# The time of every file in the packages and the image: the last commit's.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)

.PHONY: static
static: deps ## Build static attestationd and attestation (cgo linked statically) into bin/static/, what the .deb and the image ship
	$(GO) build -trimpath -tags $(STATIC_TAGS) -ldflags='-s -w -linkmode external -extldflags -static $(GO_LDFLAGS)' -o $(BIN)/static/ ./controlplane/cmd/attestationd ./cli/cmd/attestation
	@stat -c '%n: %s bytes' $(BIN)/static/attestationd $(BIN)/static/attestation

$(BIN)/nfpm: packaging/go.mod packaging/go.sum
	cd packaging && $(GO) build -o $(BIN)/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm

# The packages' version is VERSION as dpkg orders it (see the script).
DEB_VERSION     = $(shell packaging/deb/version.sh '$(VERSION)')
DEB_ARCH        = $(shell $(GO) env GOARCH)
DEB_MAINTAINER ?= attestation maintainers <maintainers@attestation.invalid>

.PHONY: deb
deb: static agent $(BIN)/nfpm ## Build the Debian packages into dist/ with nfpm: attestation (daemon as a systemd service, CLI, agent) and attestation-cli (the CLI alone)
	@mkdir -p $(DIST) && rm -f $(DIST)/attestation_*.deb $(DIST)/attestation-cli_*.deb
	@for pkg in attestation attestation-cli; do \
		BIN='$(BIN)' DEB_VERSION='$(DEB_VERSION)' DEB_ARCH='$(DEB_ARCH)' DEB_MAINTAINER='$(DEB_MAINTAINER)' SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
			$(BIN)/nfpm package --config packaging/deb/$$pkg.yaml --packager deb --target $(DIST)/ || exit 1; \
	done
	@stat -c '%n: %s bytes' $(DIST)/attestation_$(DEB_VERSION)_$(DEB_ARCH).deb $(DIST)/attestation-cli_$(DEB_VERSION)_$(DEB_ARCH).deb

IMAGE ?= attestationd:$(or $(VERSION),devel)

.PHONY: image
image: static ## Build the OCI image IMAGE (static binaries, non-root, port 9000, volume /var/lib/attestation) into dist/image (OCI layout) and dist/attestation-image.tar (docker load, podman load)
	cd packaging && SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/attestation-image \
		--bin $(BIN)/static --version '$(VERSION)' --tag '$(IMAGE)' --layout $(DIST)/image --tarball $(DIST)/attestation-image.tar
	@du -sh $(DIST)/image $(DIST)/attestation-image.tar

.PHONY: boot-assets
boot-assets: build agent ## Fetch Debian's kernel (apt-get download) and build the agent's initramfs into DATA_DIR/boot, what network boot serves
	$(BIN)/attestation images boot-assets --agent $(BIN)/attestation-agent --out $(DATA_DIR)/boot

.PHONY: run
run: build ## Build and start attestationd with its defaults (API on :9000, data in ./var)
	$(BIN)/attestationd --listen $(LISTEN) --data-dir $(DATA_DIR)

.PHONY: run-oidc-demo
run-oidc-demo: build ## Start a development OIDC provider (alice: operator, bob: viewer, root: admin) on OIDC_LISTEN (127.0.0.1:9400) and attestationd trusting it
	@LISTEN=$(LISTEN) DATA_DIR=$(DATA_DIR) BIN=$(BIN) tools/oidc-demo.sh

.PHONY: demo
demo: deps ## Enroll one machine on this one: daemon, agent with a TPM simulator (TPM=swtpm: swtpm and --ek-roots), approve, config, events
	@tools/demo.sh $(TPM)

.PHONY: test
test: test-deps ## Run every test (unit, API through Connect/gRPC/REST, CLI, crash and durability, the .deb and the image)
	$(GO) test -count=1 -timeout 20m ./...
	cd packaging && $(GO) test -count=1 -timeout 20m ./...

.PHONY: test-short
test-short: deps ## Run the fast tests only
	$(GO) test -short ./...
	cd packaging && $(GO) test -short ./...

.PHONY: bench
bench: test-deps ## Print the figures: lifecycle throughput, event dispatch latency, enrollment storm (SQLite, PostgreSQL with one and two daemons, the kill -9 of one), boot storm, oversized bodies, initramfs, images (ISO beside xorriso), TFTP, HTTP boot, DHCP
	@tools/deps.sh bench
	$(GO) test -run '^$$' -bench . -skip EnrollmentStorm -benchtime 3s -timeout 20m ./controlplane/bench/
	$(GO) test -v -run '^$$' -bench EnrollmentStorm -benchtime 1x -timeout 20m ./controlplane/bench/
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 10m ./boot/tftp/
	$(GO) test -run '^$$' -bench DefaultInitramfs -benchtime 3x -timeout 10m ./images/initramfs/
	$(GO) test -run '^$$' -bench Images -benchtime 5x -timeout 10m ./images/cache/
	$(GO) test -run '^$$' -bench HTTPBootKernel -benchtime 1x -timeout 10m ./boot/httpboot/
	@if [ "$$(id -u)" = 0 ]; then ATTESTATION_DHCP_BENCH=1 $(GO) test -count=1 -v -run '^TestPerfdhcp$$' -timeout 30m ./boot/dhcp/; \
	else echo "SKIP DHCP figure (perfdhcp, Kea, dnsmasq across network namespaces): needs root"; fi

.PHONY: fuzz
fuzz: deps ## Fuzz the REST and Connect input decoding (body limits, gzip included) for FUZZTIME each (default 60s)
	$(GO) test -run '^$$' -fuzz '^FuzzREST$$' -fuzztime $${FUZZTIME:-60s} ./controlplane/api/
	$(GO) test -run '^$$' -fuzz '^FuzzConnect$$' -fuzztime $${FUZZTIME:-60s} ./controlplane/api/

$(BIN)/buf: tools/buf/go.mod tools/buf/go.sum
	@echo "building buf (a few minutes the first time)"
	cd tools/buf && $(GO) build -o $(BIN)/buf github.com/bufbuild/buf/cmd/buf

$(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go: tools/protoc-gen/go.mod tools/protoc-gen/go.sum
	cd tools/protoc-gen && $(GO) build -o $(BIN)/ google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go ## Build the code generators (buf, protoc-gen-go, protoc-gen-connect-go) into bin/

.PHONY: generate
generate: tools ## Regenerate the Go code from proto/
	cd proto && $(BIN)/buf format -w && $(BIN)/buf generate

.PHONY: check-generate
check-generate: generate ## Fail when regenerating changes the committed code
	@if [ -n "$$(git status --porcelain -- proto)" ]; then \
		echo "generated code is out of date: run 'make generate' and commit:"; \
		git status --porcelain -- proto; git diff --stat -- proto; exit 1; \
	fi
	@echo "generated code is up to date"

.PHONY: lint
lint: tools ## gofmt, go vet and buf lint (third_party/ is upstream code, left as it is)
	@out="$$(gofmt -l $$(git ls-files '*.go' ':!third_party'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	# The static agent's build: tests behind a cgo tag must not strand others.
	CGO_ENABLED=0 $(GO) vet ./...
	cd packaging && $(GO) vet ./...
	cd proto && $(BIN)/buf lint

.PHONY: clean
clean: ## Remove bin/ and dist/ (not the data in ./var)
	rm -rf $(BIN) $(DIST)
