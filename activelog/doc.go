// Package activelog will hold the activity log: the LRU set of hot 4 MiB
// extents that bounds resync after a primary crash, and its on-disk ring of
// checksummed transaction records with replay.
//
// It is pure: no goroutines, no files, no network, no logging. Built in the
// metadata issue (#3); until then the package is empty and nothing imports
// it.
package activelog
