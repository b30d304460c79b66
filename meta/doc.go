// Package meta is a volume replica's persistent metadata: the superblock
// (identity, generation identifiers, flags, geometry) kept in two
// checksummed copies, and the layout of the metadata area that also holds
// the activity-log ring and one dirty bitmap per peer slot.
//
// The metadata area lives at the end of the backing device (internal
// metadata: the exported size shrinks by the area's size) or in a file of
// its own (external metadata). Layout computes where everything goes;
// docs/format/metadata.md draws it.
//
// Updates never overwrite the valid superblock: Store.Write encodes the new
// state with the next sequence number into the *other* copy, syncs, and
// only then is it the newest valid copy. Load decodes both copies, skips a
// torn or corrupt one (CRC32C), and uses the newer valid one; two bad
// copies, a foreign magic or a format version from the future are errors
// that name the problem, and nothing is written.
//
// It is pure in the house sense: no goroutines, clock or logging;
// persistence goes through the Device interface (io.ReaderAt, io.WriterAt,
// Sync) so tests can hand in a crashable in-memory store.
//
// Example:
//
//	l, _ := meta.ComputeLayout(meta.Geometry{DeviceBytes: size, PeerSlots: 3,
//		BytesPerBit: 4096, ALRecords: 8})
//	st := meta.NewStore(dev, l)
//	sb, err := st.Load()
//	if errors.Is(err, meta.ErrNoMetadata) { sb = meta.NewSuperblock(...); st.Write(sb) }
package meta
