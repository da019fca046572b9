# RideShare DBaaS. `make run` starts the whole system; `make test` passes every test on a
# fresh machine (it installs and starts ZooKeeper and RabbitMQ from Debian's packages,
# installs Chromium for the console's browser tests and nats-server for the tests of `--nats`,
# and builds the RabbitMQ, ZooKeeper, Prometheus and HAProxy images the Docker deployments'
# tests run: `make images`).

GO      ?= go
BIN     := bin/rideshare
IMAGE   ?= rideshare:latest
PKGS    := ./...
export CGO_ENABLED := 0

.PHONY: all build run test unit lint soak chaos services services-stop clean image images compose-up compose-down

all: build

build:
	$(GO) build -trimpath -tags timetzdata -ldflags '-s -w' -o $(BIN) ./cmd/rideshare

run: build
	./$(BIN) up

# Everything: format and vet, then every test with the race detector (which needs cgo). The
# browser tests of the console fail here rather than skip when no Chromium is found
# (scripts/services.sh installs Debian's chromium), and the Docker deployments' tests (deploy/)
# when no Docker Engine, docker-compose or service image is found (`images` builds those), and
# the tests of `--nats` against Debian's nats-server 2.9.10 when it is not installed
# (scripts/services.sh installs it; elsewhere they build the embedded module's server, or skip).
test: lint services build image images
	CGO_ENABLED=1 RIDESHARE_REQUIRE_BROWSER=1 RIDESHARE_REQUIRE_DOCKER=1 RIDESHARE_REQUIRE_NATS_SERVER=1 $(GO) test -race -count=1 -p 1 -timeout 60m $(PKGS)

# Unit tests only: no ZooKeeper or RabbitMQ needed.
unit:
	CGO_ENABLED=1 RIDESHARE_SKIP_ZK=1 $(GO) test -race -short -count=1 $(PKGS)

# A long soak against `rideshare up` with its defaults (SOAK_DURATION, default 30m): errors by
# status, workers over time, each process's peak memory, the sync log's size (docs/BENCHMARKS.md).
soak: build
	bash scripts/soak.sh

# The long chaos runs (CHAOS_DURATION, default 30m, per configuration: embedded, RabbitMQ +
# ZooKeeper, Docker runtime): results in docs/RELIABILITY.md. `make test` runs a minute of each.
chaos: services build image
	bash scripts/chaos.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

services:
	bash scripts/services.sh

services-stop:
	bash scripts/services.sh stop

# The rideshare image with no registry: bin/rideshare in an image FROM scratch (deploy/Dockerfile).
# The build context is the repository, cut down to bin/rideshare and deploy/rootfs by .dockerignore.
image: build
	docker build -f deploy/Dockerfile -t $(IMAGE) .

# RabbitMQ, ZooKeeper, Prometheus and HAProxy images from Debian's packages, no registry:
# rideshare-{rabbitmq,zookeeper,prometheus,haproxy}:local (scripts/images.sh; caches under
# /var/cache/rideshare-images). A second run reuses what is built.
images:
	bash scripts/images.sh

# One Docker host with no registry (deploy/README.md): gateway, users, rides, orchestrator and
# its workers from rideshare:latest, RabbitMQ, ZooKeeper and Prometheus from the images above.
compose-up: images image
	docker-compose up -d

compose-down:
	docker-compose down

clean:
	rm -rf bin data
