// Command nbdsmoke exercises package nbd/kernel against a real kernel. It is
// meant to run as root inside a throwaway QEMU guest (TestStandalone in tests/qemu runs it): it loads
// nbd, attaches /dev/nbd0 to an in-memory NBD responder, writes and reads it
// with busybox dd, simulates a daemon restart (serve dies, LINK_DEAD,
// Attach again through RECONFIGURE), checks the refusals, and disconnects.
// Every check prints "CHECK name: ok" or "CHECK name: FAIL ..."; the last
// line is "SMOKE: PASS" or "SMOKE: FAIL".
//
// tests/qemu/guest/standalone.sh is the real-daemon test that runs it last.
package main
