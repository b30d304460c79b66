// Package crashdisk is a test fake: an in-memory disk that can lose power.
//
// Writes land in a volatile image; Sync makes everything written so far
// durable. Crash(seed) models a power cut: the durable image survives, and
// every write issued since the last Sync independently survives whole, is
// lost, or is torn at a sector boundary (a prefix of its 512-byte sectors
// lands), chosen by a seeded generator so a failing case replays from its
// seed. Reads see the volatile image, like a page cache would.
//
// It implements io.ReaderAt, io.WriterAt and Sync() error, the interface
// the pure packages persist through. Failures can be injected: the next
// Sync (or the Nth write) returns an error.
//
// It must not be used outside tests.
package crashdisk
