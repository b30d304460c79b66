// Package qemu is the VM suite: it boots QEMU guests with Debian's 6.1 and
// 6.12 kernels and proves blkrep on a real kernel: /dev/nbd0 attached
// through netlink, ext4, power loss, cable cuts, automatic failover, fsck,
// resync, SQLite, protocol A over netem latency. docs/vm-tests.md describes
// the rig and every scenario.
//
// It runs only with BLKREP_VM=1 (make test-vm, part of make test) and as
// root. The guest images come from scripts/vm-image.sh; the guests are
// driven through blkrep-agent (tests/qemu/agent) on a virtio-serial port
// and through QMP.
package qemu
