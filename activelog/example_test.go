package activelog_test

import (
	"fmt"

	"github.com/blkrep/blkrep/activelog"
)

// The life of a volume's activity log, with the ring kept in memory. A
// daemon does the same with a mutex around the Log, the ring on disk, and
// the log writes on their own goroutine.
func Example() {
	cfg := activelog.Config{Extents: 4, RingRecords: 4}

	// create-md: write the whole ring image, then sync.
	al, ring, err := activelog.Format(cfg)
	if err != nil {
		panic(err)
	}

	// Write path: a 64 KiB write at 10 MiB touches extent 2, which is cold.
	tk, _ := al.Begin(10<<20, 64<<10)
	fmt.Println("ready at once:", tk.Ready())

	// Log writer: persist the bitmap pages of tx.Evicted, write the record
	// at tx.Index and sync, then commit; Commit returns the tickets to wake.
	tx, _ := al.Prepare()
	copy(ring[tx.Index], tx.Record)
	woken, _ := al.Commit(tx)
	fmt.Println("record", tx.Seq, "added", tx.Added, "evicted", tx.Evicted, "woke", len(woken), "ready:", tk.Ready())

	// The write is submitted, and completes.
	_ = al.Release(tk)

	// Clean shutdown: flush the whole bitmap, then write the clean marker.
	tx, _ = al.MarkClean()
	copy(ring[tx.Index], tx.Record)
	_, _ = al.Commit(tx)

	// Restart: read the ring and recover. Clean: the hot set need not be
	// resynced; otherwise mark info.Hot dirty in every peer's bitmap.
	_, info, err := activelog.Recover(ring, cfg)
	fmt.Println("clean:", info.Clean, "hot:", info.Hot, "newest:", info.NewestSeq, err)
	// Output:
	// ready at once: false
	// record 2 added [2] evicted [] woke 1 ready: true
	// clean: true hot: [2] newest: 3 <nil>
}
