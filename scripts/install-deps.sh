#!/usr/bin/env bash
# Install the Debian packages that blkrep's tests, demo, benchmark and VM suite need.
#
# Usage: scripts/install-deps.sh [--check] [GROUP...]
#
# Groups (default: test bench):
#   test   NBD clients and reference servers used by the integration tests and the demo
#   bench  what scripts/bench.sh needs (fio's nbd engine, qemu-nbd, nbdkit, nbd-server, ...)
#   vm     QEMU guests with a real kernel (tests/qemu): qemu-system-x86, busybox-static, ...
#   all    every group above
#
# Idempotent: only packages that are not installed yet are installed, `apt-get update` runs at
# most once and only when something is missing, nothing reads standard input (CI has none).
# --check lists what is missing and exits 1 if anything is, without installing.
set -euo pipefail

prog=${0##*/}
die() { echo "$prog: error: $*" >&2; exit 1; }
log() { echo "$prog: $*" >&2; }

pkgs_test=(
	fio             # fio --ioengine=nbd
	qemu-utils      # qemu-nbd, qemu-img, qemu-io
	libnbd-bin      # nbdinfo, nbdcopy, nbdsh
	python3-libnbd  # nbdsh's python module
	nbdkit          # nbdkit file / nbdkit nbd --filter=log
	nbd-server
	nbd-client
	util-linux      # setsid, flock, ...
	procps          # pgrep/pkill -P, ps
	iproute2        # ip netns
	nftables        # nft: partitions in tests/netns
	jq
	python3
)
pkgs_bench=(
	fio qemu-utils libnbd-bin nbdkit nbd-server
	util-linux procps coreutils jq python3
)
pkgs_vm=(
	qemu-system-x86 # qemu-system-x86_64 -accel tcg
	busybox-static  # guest userland
	cpio            # initramfs
	kmod            # depmod for the extracted Debian kernel
	e2fsprogs       # mke2fs/e2fsck inside guests
	gzip
	xz-utils        # the 6.12 kernel's .ko.xz modules
	util-linux      # blkdiscard inside guests
	sqlite3         # the SQLite scenario inside guests
	iproute2        # tc (netem) inside guests
)

check_only=0
groups=()
for arg in "$@"; do
	case $arg in
	--check) check_only=1 ;;
	-h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	test|bench|vm|all) groups+=("$arg") ;;
	*) die "unknown argument '$arg' (groups: test bench vm all; option: --check)" ;;
	esac
done
[ ${#groups[@]} -gt 0 ] || groups=(test bench)

wanted=()
for g in "${groups[@]}"; do
	case $g in
	test) wanted+=("${pkgs_test[@]}") ;;
	bench) wanted+=("${pkgs_bench[@]}") ;;
	vm) wanted+=("${pkgs_vm[@]}") ;;
	all) wanted+=("${pkgs_test[@]}" "${pkgs_bench[@]}" "${pkgs_vm[@]}") ;;
	esac
done

command -v dpkg-query >/dev/null 2>&1 || die "dpkg-query not found: this script supports Debian/Ubuntu only"

is_installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
declare -A seen=()
for p in "${wanted[@]}"; do
	[ -n "${seen[$p]:-}" ] && continue
	seen[$p]=1
	is_installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
	log "all packages present (${groups[*]})"
	exit 0
fi
if [ "$check_only" = 1 ]; then
	log "missing packages: ${missing[*]}"
	exit 1
fi

# Root, or passwordless sudo; never prompt.
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO=(sudo -n)
	else
		die "need root (or passwordless sudo) to install: ${missing[*]}"
	fi
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

log "installing: ${missing[*]}"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null \
	|| die "apt-get update failed"
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}" </dev/null \
	|| die "apt-get install failed for: ${missing[*]}"

still=()
for p in "${missing[@]}"; do
	is_installed "$p" || still+=("$p")
done
[ ${#still[@]} -eq 0 ] || die "still not installed after apt-get: ${still[*]}"
log "done"
