#!/usr/bin/env bash
# VM smoke test of the REAL blkrepd on a real kernel: boots Debian's 6.1
# and/or 6.12 kernel under QEMU (TCG) with a busybox initramfs holding the
# static blkrepd and blkrep, e2fsprogs, util-linux' blkdiscard and the nbd and
# ext4 modules, and runs guest.sh there as /init's payload:
#
#   0 load ext4 (nbd is left to blkrepd, which loads it through kmod)
#   1 blkrepd with device = /dev/nbd0 attaches (CONNECT), status "attached"
#   2 mkfs.ext4, write files, umount, e2fsck -fn clean, remount, checksums
#   3 kill -9 blkrepd while mounted and writing (O_DIRECT), restart: the device
#     re-attaches by RECONFIGURE, the blocked write completes, checksums hold
#   4 blkdiscard (TRIM) and blkdiscard -z (BLKZEROOUT; WRITE_ZEROES on 6.12)
#     on an unmounted range outside the filesystem read back zeroes
#   stall SIGSTOP blkrepd past device_timeout: the kernel drops the socket,
#     blkrepd notices and re-attaches by itself (RECONFIGURE), I/O completes
#   5 SIGTERM: exit 0, device detached (size 0), sockets removed
#   6 start again (CONNECT on the existing device), verify, SIGTERM
#   klog no I/O errors, ext4 errors, warnings or hung tasks in the kernel log
#   pkg the nbd/kernel package smoke with a toy server (main.go here)
#
# Usage: scripts/vm-smoke/run.sh [6.1|6.12|all|FULL_KERNEL_VERSION]...  (default all)
#
# Environment:
#   VMSMOKE_TIMEOUT   seconds per guest before qemu is killed (default 300; the
#                     guest reports and powers off 30s earlier)
#   VMSMOKE_ACCEL     qemu accelerator (default tcg; kvm hangs on our hosts)
#   VMSMOKE_VERBOSE=1 stream the serial console while the guest runs
#   VMSMOKE_PARALLEL  1: boot the kernels at the same time, one vCPU each
#                     (default when the host has 2+ CPUs), 0: one after another
#   VMSMOKE_KVER_6_1, VMSMOKE_KVER_6_12  exact kernel versions to use
#
# Kernels come from Debian packages (apt-get download), cached with the
# initramfs trees, binaries and serial logs in .cache/vm (git-ignored).
# Exit status 0 only if every step passed on every kernel; on failure the
# guest's serial log is printed.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$(pwd)
C=$ROOT/.cache/vm
HERE=$ROOT/scripts/vm-smoke
TIMEOUT=${VMSMOKE_TIMEOUT:-300}
ACCEL=${VMSMOKE_ACCEL:-tcg}
mkdir -p "$C"

log() { echo "vm-smoke: $*" >&2; }
die() {
	log "error: $*"
	exit 2
}

# ---------------------------------------------------------------- host tools
need_pkgs=()
need() { command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2"); }
need qemu-system-x86_64 qemu-system-x86
need cpio cpio
need depmod kmod
need modprobe kmod
need /usr/sbin/mke2fs e2fsprogs
need /usr/sbin/e2fsck e2fsprogs
need /usr/sbin/blkdiscard util-linux
need xz xz-utils
need gzip gzip
need ldd libc-bin
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq </dev/null
	apt-get install -y -qq "${need_pkgs[@]}" </dev/null
fi
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 ||
	die "/bin/busybox is not a static binary (install busybox-static)"
command -v go >/dev/null || die "go is not in PATH"

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

# resolve SERIES: the full kernel version (ABI name) for 6.1 or 6.12.
resolve() {
	local s=$1 v="" var
	var=VMSMOKE_KVER_${s//./_}
	v=${!var:-}
	if [ -z "$v" ]; then # newest one already cached
		v=$(find "$C" -maxdepth 1 -type d -name "k-$s.*-amd64" -printf '%f\n' 2>/dev/null |
			sed 's/^k-//' | sort -V | tail -1)
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
	local v=$1 k=$C/k-$1
	if [ ! -f "$k/boot/vmlinuz-$v" ]; then
		local deb
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
	local b=$C/bin
	mkdir -p "$b"
	log "building static blkrepd, blkrep and the nbd/kernel smoke into $b"
	CGO_ENABLED=0 go build -o "$b/" ./cmd/blkrepd ./cmd/blkrep
	CGO_ENABLED=0 go build -o "$b/vm-smoke-pkg" ./scripts/vm-smoke
	for f in blkrepd blkrep vm-smoke-pkg; do
		if ldd "$b/$f" >/dev/null 2>&1; then die "$b/$f is dynamically linked"; fi
	done
}

# copy_dyn ROOT BIN...: BIN into ROOT/usr/sbin plus the libraries ldd lists.
copy_dyn() {
	local r=$1 bin lib
	shift
	for bin in "$@"; do
		install -D -m 755 "$bin" "$r/usr/sbin/$(basename "$bin")"
		for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
			[ -e "$r$lib" ] || install -D -m 755 "$(readlink -f "$lib")" "$r$lib"
		done
	done
}

# initramfs V: the guest's root, packed into $C/vmsmoke-initrd-V.gz.
initramfs() {
	local v=$1 k=$C/k-$1 i=$C/vmsmoke-root-$1 m p
	local kmods=$k/lib/modules/$v imods=$i/lib/modules/$v
	rm -rf "$i"
	mkdir -p "$i"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,srv,mnt} "$imods"
	install -m 755 /bin/busybox "$i/bin/busybox"
	install -m 755 "$C/bin/blkrepd" "$C/bin/blkrep" "$C/bin/vm-smoke-pkg" "$i/usr/bin/"
	copy_dyn "$i" /usr/sbin/mke2fs /usr/sbin/e2fsck /usr/sbin/blkdiscard
	ln -s mke2fs "$i/usr/sbin/mkfs.ext4"
	[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$i/etc/"

	# ext4 and its dependencies (softdeps included), in load order, for
	# insmod in the guest: decompressed, since busybox insmod cannot be
	# trusted with .ko.xz. nbd stays as the package ships it (.ko.xz on
	# 6.12): blkrepd must load it itself.
	: >"$i/etc/vmsmoke-modules"
	for p in $(modprobe -C /dev/null -d "$k" -S "$v" --show-depends ext4 | awk '$1 == "insmod" { print $2 }'); do
		m=${p#"$kmods/"}
		mkdir -p "$imods/$(dirname "$m")"
		case $m in
		*.ko.xz) xz -dc "$p" >"$imods/${m%.xz}" && m=${m%.xz} ;;
		*) cp "$p" "$imods/$m" ;;
		esac
		echo "$m" >>"$i/etc/vmsmoke-modules"
	done
	for p in $(cd "$kmods" && find kernel -name 'nbd.ko*'); do
		mkdir -p "$imods/$(dirname "$p")"
		cp "$kmods/$p" "$imods/$p"
	done
	cp "$kmods"/modules.{order,builtin,builtin.modinfo} "$imods/"
	depmod -b "$i" "$v"

	install -m 755 "$HERE/guest.sh" "$i/guest.sh"
	local wd=$((TIMEOUT > 60 ? TIMEOUT - 30 : TIMEOUT * 3 / 4))
	cat >"$i/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
mount -t tmpfs -o size=160m srv /srv
echo "VMSMOKE BOOT kernel \$(uname -r) at \$(cut -d' ' -f1 /proc/uptime)s"
# Guest-side watchdog: report and power off before the host kills qemu.
(
	sleep $wd
	echo "VMSMOKE WATCHDOG: guest still running after ${wd}s"
	echo "VMSMOKE STEP watchdog: FAIL"
	ps
	dmesg | tail -n 60
	for f in /run/blkrep/*.log; do echo "---- \$f"; tail -n 40 "\$f"; done
	echo "VMSMOKE RESULT: FAIL (watchdog)"
	poweroff -f
) &
sh /guest.sh
echo "VMSMOKE EXIT \$?"
poweroff -f
INIT
	chmod 755 "$i/init"
	(cd "$i" && find . | sort | cpio -o -H newc --quiet | gzip -1) >"$C/vmsmoke-initrd-$v.gz"
}

# boot V: run the guest, serial console into $C/vmsmoke-serial-V.log.
boot() {
	local v=$1 k=$C/k-$1 out=$C/vmsmoke-serial-$1.log rc=0
	local -a q=(qemu-system-x86_64 -accel "$ACCEL" -m 512 -smp 1 -nographic -no-reboot
		-kernel "$k/boot/vmlinuz-$v" -initrd "$C/vmsmoke-initrd-$v.gz"
		-append "console=ttyS0 quiet panic=-1")
	if [ "${VMSMOKE_VERBOSE:-0}" = 1 ]; then
		timeout -k 10 "$TIMEOUT" "${q[@]}" </dev/null 2>&1 | tee "$out" || rc=$?
	else
		timeout -k 10 "$TIMEOUT" "${q[@]}" </dev/null >"$out" 2>&1 || rc=$?
	fi
	[ "$rc" = 124 ] && echo "VMSMOKE HOST: qemu killed after ${TIMEOUT}s" >>"$out"
	return 0
}

# verdict V LABEL SECONDS: check the markers; print a summary (and the whole
# serial log on failure). Returns 1 on failure.
verdict() {
	local v=$1 out=$C/vmsmoke-serial-$1.log s fail=0 line
	local -a steps=(0 1 2 3 4 stall 5 6 klog pkg)
	tr -d '\r' <"$out" >"$out.tmp" && mv "$out.tmp" "$out"
	echo "== kernel $v ($2): $3s wall"
	for s in "${steps[@]}"; do
		line=$(grep -E "^VMSMOKE STEP $s: (PASS|FAIL)" "$out" | head -1 || true)
		[ -n "$line" ] || line="VMSMOKE STEP $s: FAIL (no marker: did not run)"
		echo "   ${line#VMSMOKE }"
		case $line in *": PASS"*) ;; *) fail=1 ;; esac
	done
	grep -q "^VMSMOKE STEP .*: FAIL" "$out" && fail=1
	grep -q "^VMSMOKE RESULT: PASS" "$out" || fail=1
	grep -E "^VMSMOKE (HOST|WATCHDOG)|^VMSMOKE STEP watchdog" "$out" | sed 's/^VMSMOKE /   /' || true
	if [ $fail = 1 ]; then
		echo "---- serial log of kernel $v ($out) ----"
		cat "$out"
		echo "---- end of serial log of kernel $v: FAIL ----"
		return 1
	fi
	echo "   serial log: $out"
	return 0
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

T_ALL=$(date +%s)
build
versions=()
for s in "${series[@]}"; do
	case $s in *-amd64) v=$s ;; *) v=$(resolve "$s") ;; esac
	fetch "$v"
	initramfs "$v"
	versions+=("$v")
done
# timed_boot V: boot, record the wall time in $C/vmsmoke-time-V.
timed_boot() {
	local t0
	t0=$(date +%s)
	log "booting $1 (timeout ${TIMEOUT}s, accel $ACCEL)"
	boot "$1"
	echo $(($(date +%s) - t0)) >"$C/vmsmoke-time-$1"
}
if [ "${VMSMOKE_PARALLEL:-$([ "$(nproc)" -ge 2 ] && echo 1 || echo 0)}" = 1 ] && [ ${#versions[@]} -gt 1 ]; then
	pids=()
	for v in "${versions[@]}"; do
		timed_boot "$v" &
		pids+=($!)
	done
	wait "${pids[@]}"
else
	for v in "${versions[@]}"; do timed_boot "$v"; done
fi
failed=()
summary=()
for v in "${versions[@]}"; do
	t=$(cat "$C/vmsmoke-time-$v")
	if verdict "$v" "${v%.*}" "$t"; then
		summary+=("PASS $v ${t}s")
	else
		summary+=("FAIL $v ${t}s")
		failed+=("$v")
	fi
done
echo "== vm-smoke: $(($(date +%s) - T_ALL))s total"
printf '   %s\n' "${summary[@]}"
[ ${#failed[@]} = 0 ] || exit 1
