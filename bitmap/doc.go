// Package bitmap will hold the per-peer dirty-region bitmap: one bit per
// 4 KiB (configurable up to 1 MiB) that says "this region may differ from
// that peer", with range set/clear/test, run iteration, OR-merge, lazy
// on-disk pages and a compact wire encoding for resync.
//
// It is pure: no goroutines, no files, no network, no logging; persistence
// goes through io.ReaderAt/io.WriterAt. Built in the metadata issue (#3);
// until then the package is empty and nothing imports it.
package bitmap
