#!/usr/bin/env bash
# Builds the guest images of the VM suite (tests/qemu) from Debian packages
# only: for each kernel series asked for, Debian's kernel package and an
# initramfs holding
#
#   busybox-static (the userland), /init (below),
#   blkrepd, blkrep and blkrep-agent (tests/qemu/agent), built static,
#   the nbd/kernel package smoke (tests/qemu/nbdsmoke) and the standalone
#     scenario's guest script (tests/qemu/guest/standalone.sh),
#   mke2fs/e2fsck, blkdiscard, sqlite3 and tc with the libraries they need,
#   the modules: virtio (pci, console, net, blk), ext4, dm-flakey,
#     dm-log-writes, dm-delay, sch_netem (loaded at boot, decompressed) and
#     nbd (as the package ships it: blkrepd loads it through kmod).
#
# /init mounts the pseudo file systems, loads the modules, configures eth0
# from the kernel command line (blkrep.name=NAME blkrep.ip=ADDR/LEN) and runs
# the agent on the virtio-serial port "blkrep.agent": the host drives the
# guest through it (tests/qemu/agent/doc.go has the protocol).
#
# Usage: scripts/vm-image.sh [6.1|6.12|all|FULL_KERNEL_VERSION]...  (default all)
#
# Output in .cache/vm (git-ignored), one folder per kernel version:
#   .cache/vm/image-VERSION/{vmlinuz,initrd.gz,stamp}
# and on stdout one line per image: "image SERIES VERSION VMLINUZ INITRD".
# An image is rebuilt only when its inputs change: the Go sources, go.mod,
# this script, the guest script, the host tools copied in, the kernel.
#
# Environment: VMIMAGE_KVER_6_1, VMIMAGE_KVER_6_12 pin exact kernel versions.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
C=$ROOT/.cache/vm
mkdir -p "$C"

log() { echo "vm-image: $*" >&2; }
die() {
	log "error: $*"
	exit 2
}

# ---------------------------------------------------------------- host tools
bash "$ROOT/scripts/install-deps.sh" vm >&2
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 ||
	die "/bin/busybox is not a static binary (install busybox-static)"
command -v go >/dev/null || die "go is not in PATH"
GUEST_TOOLS=(/usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/blkdiscard /usr/bin/sqlite3 /usr/sbin/tc)
for t in "${GUEST_TOOLS[@]}"; do
	[ -x "$t" ] || die "$t is missing (scripts/install-deps.sh vm installs it)"
done

# Modules loaded at boot, with their dependencies, in load order. nbd is
# not among them: blkrepd loads it.
BOOT_MODULES=(virtio_pci virtio_console virtio_net virtio_blk ext4 dm_flakey dm_log_writes dm_delay sch_netem)

# ---------------------------------------------------------------- kernels
# apt_lookup SERIES: the current Debian kernel of that series, from apt's lists.
apt_lookup() {
	case $1 in
	6.1) apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/.*Depends: linux-image-\(6\.1\.[0-9]*-[0-9]*-amd64\)$/\1/p' | head -1 ;;
	*) apt-cache pkgnames "linux-image-$1." 2>/dev/null |
		sed -n "s/^linux-image-\(${1//./\\.}\.[0-9]*+deb[0-9]*-amd64\)\(-unsigned\)\{0,1\}$/\1/p" |
		sort -uV | tail -1 ;;
	esac
}

# resolve SERIES: the full kernel version (ABI name) for 6.1 or 6.12: the
# pinned one, else the newest one already unpacked, else apt's current one.
resolve() {
	local s=$1 v="" var
	var=VMIMAGE_KVER_${s//./_}
	v=${!var:-}
	if [ -z "$v" ]; then
		v=$(find "$C" -maxdepth 1 -type d -name "k-$s.*-amd64" -printf '%f\n' 2>/dev/null |
			sed 's/^k-//' | grep -E "^${s//./\\.}\.[0-9]" | sort -V | tail -1 || true)
	fi
	if [ -z "$v" ]; then
		v=$(apt_lookup "$s")
		if [ -z "$v" ]; then
			apt-get update -qq </dev/null >&2
			v=$(apt_lookup "$s")
		fi
	fi
	[ -n "$v" ] || die "cannot find a Debian $s kernel (apt-cache)"
	echo "$v"
}

# fetch V: unpack linux-image-V into $C/k-V and create modules.dep.
fetch() {
	local v=$1 k=$C/k-$1 deb
	if [ ! -f "$k/boot/vmlinuz-$v" ]; then
		deb=$(ls "$C"/linux-image-"$v"_*.deb "$C"/linux-image-"$v"-unsigned_*.deb 2>/dev/null | head -1 || true)
		if [ -z "$deb" ]; then
			log "downloading linux-image-$v"
			(cd "$C" && { apt-get download "linux-image-$v" </dev/null ||
				apt-get download "linux-image-$v-unsigned" </dev/null; }) >&2
			# ls fails on whichever of the two names is absent: ignore that,
			# check the result instead (pipefail is on).
			deb=$(ls "$C"/linux-image-"$v"_*.deb "$C"/linux-image-"$v"-unsigned_*.deb 2>/dev/null | head -1 || true)
			[ -n "$deb" ] || die "apt-get download of linux-image-$v left no .deb in $C"
		fi
		rm -rf "$k"
		dpkg-deb -x "$deb" "$k"
	fi
	[ -f "$k/lib/modules/$v/modules.dep" ] || depmod -b "$k" "$v"
}

# ---------------------------------------------------------------- binaries
build() {
	local b=$C/bin f
	mkdir -p "$b"
	log "building static blkrepd, blkrep, blkrep-agent and nbdsmoke into $b"
	CGO_ENABLED=0 go build -trimpath -o "$b/" ./cmd/blkrepd ./cmd/blkrep
	CGO_ENABLED=0 go build -trimpath -o "$b/blkrep-agent" ./tests/qemu/agent
	CGO_ENABLED=0 go build -trimpath -o "$b/nbdsmoke" ./tests/qemu/nbdsmoke
	for f in blkrepd blkrep blkrep-agent nbdsmoke; do
		if ldd "$b/$f" >/dev/null 2>&1; then die "$b/$f is dynamically linked"; fi
	done
}

# inputs V: a digest of everything image V is made of.
inputs() {
	{
		echo "kernel $1"
		sha256sum "$0" tests/qemu/guest/standalone.sh go.mod go.sum
		find . -path ./.cache -prune -o -name '*.go' ! -name '*_test.go' -print0 | sort -z | xargs -0 sha256sum
		sha256sum /bin/busybox "${GUEST_TOOLS[@]}"
	} | sha256sum | cut -d' ' -f1
}

# copy_dyn ROOT BIN...: BIN into ROOT at the same path plus the libraries ldd lists.
copy_dyn() {
	local r=$1 bin lib
	shift
	for bin in "$@"; do
		install -D -m 755 "$bin" "$r$bin"
		for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
			[ -e "$r$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$r$lib"
		done
	done
}

# initramfs V DIR: the guest's root in DIR/root, packed into DIR/initrd.gz.
initramfs() {
	local v=$1 out=$2 k=$C/k-$1 m p
	local i=$out/root kmods=$C/k-$1/lib/modules/$1
	local imods=$i/lib/modules/$v
	rm -rf "$i"
	mkdir -p "$i"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,srv,mnt,var/blkrep} "$imods"
	install -m 755 /bin/busybox "$i/bin/busybox"
	install -m 755 "$C/bin/blkrepd" "$C/bin/blkrep" "$C/bin/blkrep-agent" "$C/bin/nbdsmoke" "$i/usr/bin/"
	copy_dyn "$i" "${GUEST_TOOLS[@]}"
	ln -s mke2fs "$i/usr/sbin/mkfs.ext4"
	[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$i/etc/"
	install -m 755 tests/qemu/guest/standalone.sh "$i/standalone.sh"

	# Boot modules, decompressed (busybox insmod cannot be trusted with
	# .ko.xz), in load order, listed in /etc/blkrep-modules.
	: >"$i/etc/blkrep-modules"
	for m in "${BOOT_MODULES[@]}"; do
		for p in $(modprobe -C /dev/null -d "$k" -S "$v" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'); do
			p=${p#"$kmods/"}
			case $p in *.ko.xz) m=${p%.xz} ;; *) m=$p ;; esac
			grep -qxF "$m" "$i/etc/blkrep-modules" && continue
			mkdir -p "$imods/$(dirname "$m")"
			case $p in
			*.ko.xz) xz -dc "$kmods/$p" >"$imods/$m" ;;
			*) cp "$kmods/$p" "$imods/$m" ;;
			esac
			echo "$m" >>"$i/etc/blkrep-modules"
		done
	done
	# The standalone script loads ext4 itself (already loaded: harmless).
	grep -E '/(crc16|mbcache|jbd2|ext4)\.ko$|crc32c' "$i/etc/blkrep-modules" >"$i/etc/vmsmoke-modules" || true
	for p in $(cd "$kmods" && find kernel -name 'nbd.ko*'); do
		mkdir -p "$imods/$(dirname "$p")"
		cp "$kmods/$p" "$imods/$p"
	done
	cp "$kmods"/modules.{order,builtin,builtin.modinfo} "$imods/"
	depmod -b "$i" "$v"

	cat >"$i/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t tmpfs -o size=160m srv /srv
NAME=guest IP=
for a in $(cat /proc/cmdline); do
	case $a in
	blkrep.name=*) NAME=${a#*=} ;;
	blkrep.ip=*) IP=${a#*=} ;;
	esac
done
hostname "$NAME"
echo "BLKREP-GUEST BOOT $NAME kernel $(uname -r) at $(cut -d' ' -f1 /proc/uptime)s"
while read -r m; do
	insmod "/lib/modules/$(uname -r)/$m" 2>/tmp/insmod.err ||
		echo "BLKREP-GUEST insmod $m: $(cat /tmp/insmod.err)"
done </etc/blkrep-modules
ip link set lo up
if [ -n "$IP" ]; then
	ip link set eth0 up && ip addr add "$IP" dev eth0 ||
		echo "BLKREP-GUEST network: cannot configure eth0 with $IP"
fi
echo "BLKREP-GUEST READY $NAME at $(cut -d' ' -f1 /proc/uptime)s"
while :; do
	/usr/bin/blkrep-agent serve
	echo "BLKREP-GUEST agent exited ($?), restarting"
	sleep 1
done
INIT
	chmod 755 "$i/init"
	(cd "$i" && find . | sort | cpio -o -H newc --quiet | gzip -1) >"$out/initrd.gz.tmp"
	mv "$out/initrd.gz.tmp" "$out/initrd.gz"
}

# ---------------------------------------------------------------- main
[ $# -gt 0 ] || set -- all
series=()
for a in "$@"; do
	case $a in
	all) series+=(6.1 6.12) ;;
	6.1 | 6.12) series+=("$a") ;;
	[0-9]*.*-amd64) series+=("$a") ;;
	*)
		echo "usage: $0 [6.1|6.12|all|KERNEL_VERSION]..." >&2
		exit 2
		;;
	esac
done

built=0
for s in "${series[@]}"; do
	case $s in *-amd64) v=$s ;; *) v=$(resolve "$s") ;; esac
	fetch "$v"
	out=$C/image-$v
	mkdir -p "$out"
	[ $built = 1 ] || { build && built=1; }
	sum=$(inputs "$v")
	if [ "$(cat "$out/stamp" 2>/dev/null || true)" != "$sum" ] || [ ! -f "$out/initrd.gz" ]; then
		log "building the $v image in $out"
		initramfs "$v" "$out"
		echo "$sum" >"$out/stamp"
	else
		log "the $v image is up to date"
	fi
	ln -sf "$C/k-$v/boot/vmlinuz-$v" "$out/vmlinuz"
	case $s in *-amd64) s=${v%%-*} ;; esac
	echo "image $s $v $out/vmlinuz $out/initrd.gz"
done
