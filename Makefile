# Two commands do everything on a fresh machine:
#   make run    the refresher in demo mode (embedded Redis and fake WeChat;
#               cmd/refresher-demo: the production cmd/refresher has no demo)
#   make test   every test, installing redis-server first if it is missing
.PHONY: run test check staticcheck ensure-redis node-sdk bench chaos scale

GO ?= go

# staticcheck, pinned: 2026.2.2 (module v0.8.2) is the latest release and
# supports Go 1.26. It is built once from the Go module proxy into .bin/
# (git-ignored), one directory per version, so changing the pin rebuilds it.
STATICCHECK_VERSION := v0.8.2
STATICCHECK := .bin/staticcheck-$(STATICCHECK_VERSION)/staticcheck

run:
	$(GO) run ./cmd/refresher-demo serve --demo

# deploy/ is a module of its own (the deployment files' tests, whose
# Kubernetes and Prometheus dependencies stay out of this module).
test: ensure-redis node-sdk check
	$(GO) test -race -count=1 -timeout 20m ./...
	cd deploy && $(GO) vet ./... && $(GO) test -count=1 -timeout 10m ./...

check: $(STATICCHECK)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on: $$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

staticcheck: $(STATICCHECK)
	$(STATICCHECK) ./...

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(dir $@) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# The Node WeChat SDK (co-wechat-api, pinned by its lockfile) that the
# gateway's SDK test (cmd/refresher) runs as a client. Under CI=true a
# missing npm is an error; elsewhere that test skips.
node-sdk:
	@if command -v npm >/dev/null 2>&1; then cd testdata/node-sdk && npm ci --no-audit --no-fund --loglevel=error; \
	  elif [ "$$CI" = true ]; then echo "npm missing: the Node SDK test needs node and npm"; exit 1; \
	  else echo "npm missing: the Node SDK test will skip"; fi

ensure-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server missing: installing it from the OS packages"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	  command -v redis-server >/dev/null 2>&1 || { echo "could not install redis-server"; exit 1; }; }
	@redis-server --version

bench: ensure-redis
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./pkg/... ./internal/...

# The chaos run: real redis-server, fake WeChat, 3 refresher replicas, 10
# reader processes, every fault once; CHAOS_FLAGS="--apps 1000 --duration 5m"
# for the long variant.
# Then the gateway's fault run: a real Node SDK (co-wechat-api) in several
# processes through 3 replicas, leader kill, Redis restart, upstream faults.
chaos: ensure-redis node-sdk
	$(GO) run ./cmd/chaos $(CHAOS_FLAGS)
	$(GO) test -count=1 -run '^TestNodeSDKThroughTheGateway$$' -v ./cmd/refresher

# The scale run (internal/scale): one leader and 100,000 apps on a real
# redis-server and a fake WeChat in a child process, loopback only: cold
# start, takeover by a new leader, fetch traffic in 5 s windows, /metrics,
# heap, RSS and Redis memory per app. About 12 minutes with 600 s tokens;
# SCALE_FLAGS="TK_SCALE_APPS=10000 TK_SCALE_LIFETIME_S=300" for a shorter one.
scale: ensure-redis
	env TK_SCALE_APPS=100000 $(SCALE_FLAGS) $(GO) test -count=1 -timeout 40m -run '^TestScale$$' -v ./internal/scale
