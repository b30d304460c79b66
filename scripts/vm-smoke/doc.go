// Command vm-smoke exercises package nbd/kernel against a real kernel. It is
// meant to run as root inside a throwaway QEMU guest (see run.sh): it loads
// nbd, attaches /dev/nbd0 to an in-memory NBD responder, writes and reads it
// with busybox dd, simulates a daemon restart (serve dies, LINK_DEAD,
// Attach again through RECONFIGURE), checks the refusals, and disconnects.
// Every check prints "CHECK name: ok" or "CHECK name: FAIL ..."; the last
// line is "SMOKE: PASS" or "SMOKE: FAIL".
//
// run.sh boots the guests; guest.sh is the real-daemon test inside them.
package main
