// Package check records the history of a block workload and judges the
// image a replicated device ends with against it, in the manner of
// Jepsen: the randomized fault-injection harness writes through whichever
// node is primary, records every write and flush here, injects faults
// (partitions, process crashes, power losses that lose or tear unsynced
// writes, failovers), and at the end reads the surviving primary's image
// and asks Judge whether what it holds is allowed.
//
// # Stamps
//
// Every 512-byte sector of every write is stamped (Fill) with the write's
// id and the sector's own offset, filler derived from both, and a CRC-32C:
//
//	0     8  magic "BLKRTSEC"
//	8    16  write id (little endian)
//	16   24  byte offset of the sector on the device (little endian)
//	24  508  filler: a splitmix64 stream seeded from the id and the offset
//	508 512  CRC-32C of bytes 0..508
//
// So a sector read back names the write that put it there (Decode), and a
// torn write (a power loss kept some of its sectors, not others) is judged
// sector by sector. A sector that is not zero and not exactly such a stamp
// for its own offset is corrupt, or was written at the wrong place.
//
// # History
//
// History is the recorder, safe for concurrent use. Time is a logical
// clock: everything recorded (a write or flush beginning, one ending, an
// event) takes the next tick, so "before" means "the recorder saw it
// first". A write or flush that never ended is in flight: in doubt, it
// may or may not have landed. Note records faults and cluster events;
// PowerLoss marks those after which a node's unsynced data may be gone.
//
// A tenure is one continuous session of the writer with one primary: the
// harness starts a new one whenever the writer moves to another node or
// after any error. Writes to overlapping ranges are never in flight at
// the same time, so on each sector the write ids are the order of the
// writes: a higher id is a newer version.
//
// # The rules
//
// Judge reads the image sector by sector. found is the write a sector
// holds (0 for zeroes).
//
//  1. Never written (all protocols). A sector is zero, or it holds the
//     stamp of a recorded write that covers it. A sector outside every
//     write must be zero. Anything else (a corrupt stamp, a stamp for
//     another offset, a write that never covered the sector) is a
//     violation "never written".
//  2. Flushed writes are required (all protocols). A write is flushed if
//     it was acknowledged and a flush of the same tenure that counts was
//     issued after that acknowledgement, or, under B and C, if it was
//     acknowledged with FUA. Under C every acknowledged flush counts (it
//     waits for the in-sync peers). Under A and B a flush only closes the
//     epoch on the peers, so only a flush the peers are known to have
//     acknowledged counts (Flush.PeerAcked: the harness asked the primary
//     afterwards, repl.Replica.Drain). Under A, FUA does not count: it
//     makes the write durable on the primary only, and a failover may
//     lose it.
//  3. The strong rule (B and C). Every acknowledged write is required
//     (the peer had it before the acknowledgement), unless it is not
//     flushed and a power loss was noted after its acknowledgement: a
//     power cut may take what was not synced. Report.Strong counts the
//     writes required by this rule only, Report.Excused the acknowledged
//     writes a power loss excused.
//  4. Lost. On each sector, want is the newest required write covering
//     it; found must be want or newer (a later write, acknowledged or in
//     doubt, is allowed). Otherwise the violation is "lost": an
//     acknowledged write is missing, or an older version is there.
//  5. Consistent cut (all protocols). If write V of tenure T is present
//     somewhere, and flush F of T was acknowledged before V was issued
//     (any acknowledged flush: it closed an epoch, and a secondary
//     applies epochs in order, flushing between them), then every write
//     of T acknowledged before F was issued must be present (found at
//     least its id) on every sector it covers; a miss is a violation
//     "cut": the image has a hole (a later write landed, an earlier one
//     did not). Under A and B this is what protects the writes after the
//     last flush the peers acknowledged. When F also counts for rule 2,
//     the miss is reported as lost too.
//  6. Torn (not a violation). Report.Torn counts the sectors that show an
//     older version while a write covering them shows elsewhere in its
//     range: writes in doubt, or unflushed ones, cut by a power loss.
//
// A violation is a run of consecutive sectors with the same finding; its
// History lists the records of the writes and flushes involved and every
// event from the first of them on, merged by time (at most about 30
// lines, events elided in the middle). Report.Err lists the first ten.
//
// The cost is linear in the sectors and the writes, not in the sum of
// the writes' lengths: per-sector maxima over write ranges are filled
// from the newest write down, skipping filled sectors with a union-find;
// the cut is one flush per tenure, the latest any present write implies.
//
// Identical compares two replicas' images after a resync, naming the
// first differing sector by its stamps.
package check
