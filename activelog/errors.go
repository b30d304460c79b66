package activelog

import "errors"

// Errors callers branch on. Every error this package returns wraps one of
// them (match with errors.Is, never by string).
var (
	// ErrRange: a write range with a negative offset or length, or past
	// the last addressable extent.
	ErrRange = errors.New("activelog: invalid range")
	// ErrSpan: a write touches more extents than one transaction can make
	// hot (Log.MaxSpan). The caller must split the write.
	ErrSpan = errors.New("activelog: write spans too many extents")
	// ErrNoVictim: Prepare found extents to make hot but every hot extent
	// has writes in flight or is held. Call Prepare again after a Release
	// or an Unhold (NeedsTransaction says when).
	ErrNoVictim = errors.New("activelog: no extent can be evicted")
	// ErrPending: a transaction is prepared and neither committed nor
	// aborted; only one may be outstanding.
	ErrPending = errors.New("activelog: a transaction is outstanding")
	// ErrNotPending: Commit or Abort of a transaction that is not the
	// outstanding one.
	ErrNotPending = errors.New("activelog: not the outstanding transaction")
	// ErrBusy: MarkClean while writes are in flight, extents are held or
	// writers wait.
	ErrBusy = errors.New("activelog: writes in flight, held extents or waiting writers")
	// ErrTicket: a ticket released twice or given to the wrong Log.
	ErrTicket = errors.New("activelog: ticket not active in this log")
	// ErrNotHot: Hold of an extent that is not hot (or is being evicted).
	ErrNotHot = errors.New("activelog: extent not hot")
	// ErrNotHeld: Unhold of an extent without a hold.
	ErrNotHeld = errors.New("activelog: extent not held")
	// ErrConfig: an impossible configuration (capacity, update count or
	// ring size out of range, or a ring too small to hold the whole table
	// in its rolling windows).
	ErrConfig = errors.New("activelog: invalid configuration")

	// ErrBlank: a ring record that was never written (all zero).
	ErrBlank = errors.New("activelog: blank record")
	// ErrCorrupt: a ring record or ring that is not valid: torn, wrong
	// magic, bad checksum, field out of range, or a table that contradicts
	// itself.
	ErrCorrupt = errors.New("activelog: corrupt record")
	// ErrVersion: a record of a newer format. Refuse the volume.
	ErrVersion = errors.New("activelog: unsupported format version")
	// ErrGeometry: a valid record written for another capacity or ring
	// size than the configuration says (the superblock and the ring
	// disagree).
	ErrGeometry = errors.New("activelog: record geometry does not match the configuration")
	// ErrNoValidRecord: no record of the ring is valid (never formatted,
	// or wiped).
	ErrNoValidRecord = errors.New("activelog: no valid record in the ring")
	// ErrLostRecords: a record older than the newest is missing (corrupt
	// after it was durable), and the records after it do not cover the
	// whole slot table, so some slot's content is unknown. The hot set
	// cannot be rebuilt: treat the whole device as out of sync with every
	// peer, then Format a new ring.
	ErrLostRecords = errors.New("activelog: records lost, hot set unknown")
)
