# blkrep: see README.md. Every target installs what it needs (Debian 12, root).
GO       ?= go
BIN      ?= bin
FUZZTIME ?= 10s
# Static binaries: PR_SET_IO_FLUSHER can then be applied to every runtime
# thread (see nbd/kernel), and the same binaries run inside QEMU guests.
export CGO_ENABLED := 0

.PHONY: build test test-unit test-race test-fuzz test-torture torture test-process deps demo bench bench-resync bench-failover test-netns vet fmt-check vm-image test-vm clean

build:
	$(GO) build -trimpath -o $(BIN)/ ./cmd/blkrepd ./cmd/blkrep

deps:
	bash scripts/install-deps.sh test

## test: everything CI runs: static checks, unit + interop tests (real NBD
## clients), race detector on the concurrent core, short fuzzing, the demos
## asserted, failover in network namespaces, and the real daemon attaching
## /dev/nbd0 on Debian's 6.1 and 6.12 kernels (QEMU).
test: deps build vet fmt-check test-unit test-race test-fuzz test-torture test-process test-netns test-vm

test-unit:
	BLKREP_REQUIRE_INTEROP=1 $(GO) test -count=1 ./...

# The race detector needs cgo.
test-race:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./nbd/... ./internal/store/ ./internal/daemon/ ./internal/control/ ./internal/volume/ ./internal/repl/ ./activelog/ ./failover/ ./internal/nbdclient/

## test-process: real daemons from examples/local.toml on loopback (the
## replicated demo with every step asserted: SIGKILL, resync, split brain),
## then examples/failover.toml (the failover demo, asserted: alpha SIGKILLed,
## beta takes over, alpha returns Secondary with a partial resync).
test-process: build
	d=$$(mktemp -d) && DEMO_DIR=$$d bash scripts/demo-replicated.sh >$$d/out.txt 2>&1 \
		&& DEMO_DIR=$$d bash scripts/demo-failover.sh >>$$d/out.txt 2>&1 \
		&& echo "test-process: OK" || { cat $$d/out.txt; exit 1; }

test-fuzz:
	FUZZTIME=$(FUZZTIME) bash scripts/fuzz.sh

vet:
	$(GO) vet ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## demo: a standalone node on loopback, then examples/local.toml: alpha and
## beta replicating (protocol C), partial resyncs after a disconnect and a
## SIGKILL, a split brain resolved with --discard-my-data; then
## examples/failover.toml: automatic failover with a witness (alpha
## SIGKILLed, beta takes over, alpha returns Secondary and resyncs).
demo: build
	bash scripts/install-deps.sh test
	bash scripts/demo.sh
	bash scripts/demo-replicated.sh
	bash scripts/demo-failover.sh

## bench: fio against blkrepd (with and without metadata, and replicated pairs
## under protocols A, B and C), nbdkit, qemu-nbd and nbd-server in one run; then
## bench-resync. BENCH_RESYNC=0 skips the second part (docs/benchmarks.md).
BENCH_RESYNC ?= 1
bench: build
	bash scripts/install-deps.sh bench
	rc=0; bash scripts/bench.sh || rc=1; \
	if [ "$(BENCH_RESYNC)" != 0 ]; then echo; bash scripts/bench-resync.sh || rc=1; fi; \
	exit $$rc

## bench-resync: resync throughput, a 1 % resync of a 16 GiB sparse volume, a
## checksum resync of identical data, memory with a 1 TiB volume.
bench-resync: build
	bash scripts/install-deps.sh bench
	bash scripts/bench-resync.sh

## bench-failover: automatic failover on loopback under a writer, default
## and fast profiles: SIGKILL of the primary to the first write the new
## primary acknowledges, 7 rounds each; no acknowledged write may be lost.
bench-failover: build
	$(GO) run ./scripts/bench/failover -bin $(BIN) $(BENCH_FAILOVER_ARGS)

## test-netns: real daemons in network namespaces (root, ip, nft): kill,
## partitions, an isolated witness; checked for two primaries acknowledging
## at once, lost writes and diverging disks.
test-netns: build
	BLKREP_REQUIRE_NETNS=1 $(GO) test -count=1 -timeout 10m ./tests/netns/

## test-torture: the in-process torture harness, short mode
## (internal/torture, docs/reliability.md): TORTURE_SCHEDULES seeded
## schedules of partitions, resets, delays, kills, power cuts and crashes at
## named points, with failovers, each judged by the checker; then the seeds
## of past bugs. A failing seed prints the command that replays it.
TORTURE_SCHEDULES ?= 2000
test-torture:
	BLKREP_TORTURE_SCHEDULES=$(TORTURE_SCHEDULES) BLKREP_TORTURE_PARALLEL=8 $(GO) test -count=1 -timeout 60m -v -run 'TestSchedules|TestRegressions' ./internal/torture/

## torture: the long mode: DURATION of in-process schedules from a random
## seed, then DURATION of random faults on real daemons in network
## namespaces (tests/netns TestTorture). Figures are appended to
## TORTURE_REPORT for docs/reliability.md.
DURATION ?= 10m
TORTURE_REPORT ?= torture-report.md
torture: build
	bash scripts/install-deps.sh test
	BLKREP_TORTURE_DURATION=$(DURATION) BLKREP_TORTURE_SEED_BASE=random BLKREP_TORTURE_PARALLEL=8 \
		BLKREP_TORTURE_REPORT=$(abspath $(TORTURE_REPORT)) $(GO) test -count=1 -timeout 0 -v -run TestSchedules ./internal/torture/
	BLKREP_REQUIRE_NETNS=1 BLKREP_TORTURE_DURATION=$(DURATION) BLKREP_TORTURE_REPORT=$(abspath $(TORTURE_REPORT)) \
		$(GO) test -count=1 -timeout 0 -v -run TestTorture ./tests/netns/

## vm-image: the guests' kernels (Debian 6.1 and 6.12) and initramfs, cached
## in .cache/vm and rebuilt when an input changes (scripts/vm-image.sh).
vm-image:
	bash scripts/vm-image.sh

## test-vm: the VM suite (tests/qemu) on real kernels under QEMU: mkfs, mount,
## power loss, failover, fsck, resync, cable cuts, SQLite, protocol A.
## One scenario: make test-vm RUN=TestPowerLoss (a go test -run pattern).
RUN ?= .
test-vm: build
	BLKREP_VM=1 $(GO) test -count=1 -timeout 30m -v -run '$(RUN)' ./tests/qemu/

clean:
	rm -rf $(BIN) bench-out demo
