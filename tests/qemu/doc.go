// Package qemu will hold the VM tests that prove blkrep on a real Linux
// kernel (mkfs, mount, crash, failover, fsck, resync), opt-in from go test.
// Built in the QEMU issue (#6). Today scripts/vm-smoke boots Debian's 6.1
// and 6.12 kernels under QEMU and checks the kernel attach path.
package qemu
