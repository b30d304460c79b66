#!/bin/sh
# Boot a Debian kernel under QEMU TCG with a busybox initramfs and run the
# nbd/kernel smoke test (main.go) as /init's payload. Scratch tooling.
#
#   scripts/vm-smoke/run.sh [KERNEL_VERSION]     default 6.1.0-56-amd64
#
# Needs: qemu-system-x86 busybox-static cpio kmod (apt-get install -y ...).
# Downloads and unpacks linux-image-$VERSION under .cache/vm (git-ignored).
set -eu
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
V=${1:-6.1.0-56-amd64}
C=$ROOT/.cache/vm
K=$C/k-$V
mkdir -p "$C"

if [ ! -f "$K/boot/vmlinuz-$V" ]; then
	(cd "$C" && apt-get download "linux-image-$V" && dpkg-deb -x linux-image-"$V"_*.deb "$K") ||
	(cd "$C" && apt-get download "linux-image-$V-unsigned" && dpkg-deb -x linux-image-"$V"-unsigned_*.deb "$K")
fi
[ -f "$K/lib/modules/$V/modules.dep" ] || depmod -b "$K" "$V"

CGO_ENABLED=0 go build -o "$C/smoke" ./scripts/vm-smoke

I=$C/initramfs-$V
rm -rf "$I"
mkdir -p "$I/bin" "$I/proc" "$I/sys" "$I/dev" "$I/tmp" "$I/lib/modules/$V"
cp /bin/busybox "$I/bin/busybox"
cp "$C/smoke" "$I/smoke"
# modules.* metadata plus nbd itself (no dependencies).
cp "$K/lib/modules/$V"/modules.* "$I/lib/modules/$V/"
for m in $(cd "$K/lib/modules/$V" && find kernel -name 'nbd.ko*'); do
	mkdir -p "$I/lib/modules/$V/$(dirname "$m")"
	cp "$K/lib/modules/$V/$m" "$I/lib/modules/$V/$m"
done
cat > "$I/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo "SMOKE-BEGIN kernel $(uname -r)"
/smoke
echo "SMOKE-EXIT $?"
echo "---- dmesg (nbd) ----"
dmesg | grep -i -E 'nbd|block|blk' | tail -40
poweroff -f
INIT
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1) > "$C/initrd-$V.gz"

timeout 300 qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nographic -no-reboot \
	-kernel "$K/boot/vmlinuz-$V" -initrd "$C/initrd-$V.gz" \
	-append "console=ttyS0 quiet panic=-1" | tee "$C/serial-$V.log"
