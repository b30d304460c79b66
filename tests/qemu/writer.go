package qemu

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/clustertest"
)

// blockWriter is `blkrep-agent writer` in a guest: O_DIRECT|O_DSYNC writes
// of tagged blocks (internal/clustertest's format) to the device, each
// reported as issued and, when the write returned, acknowledged. The host
// stamps the acknowledgement with its own clock when the line arrives.
type blockWriter struct {
	n      *Node
	p      *Proc
	blocks int64
}

// writerBlocks is the region the block writers use: the first 4 MiB.
const writerBlocks = 1024

// StartWriter starts a block writer on n's device. firstSeq keeps the
// sequence numbers of writers on different nodes apart.
func (n *Node) StartWriter(firstSeq uint64, seed int) *blockWriter {
	cmd := fmt.Sprintf("blkrep-agent writer %s --node %s --blocks %d --seed %d --first-seq %d",
		device, n.Name, writerBlocks, seed, firstSeq)
	return &blockWriter{n: n, p: n.Spawn("writer", cmd), blocks: writerBlocks}
}

// writes parses the writer's output so far.
func (w *blockWriter) writes() ([]clustertest.Write, []string) {
	var ws []clustertest.Write
	var other []string
	idx := map[uint64]int{}
	for _, l := range w.p.Lines() {
		f := strings.Fields(l.Text)
		switch {
		case len(f) == 4 && f[0] == "issue":
			seq, err1 := strconv.ParseUint(f[1], 10, 64)
			off, err2 := strconv.ParseInt(f[2], 10, 64)
			ns, err3 := strconv.ParseInt(f[3], 10, 64)
			if err1 != nil || err2 != nil || err3 != nil {
				other = append(other, l.Text)
				continue
			}
			idx[seq] = len(ws)
			ws = append(ws, clustertest.Write{Tag: clustertest.Tag{Seq: seq, Offset: off, Issued: time.Unix(0, ns), Node: w.n.Name}})
		case len(f) == 2 && f[0] == "ack":
			seq, _ := strconv.ParseUint(f[1], 10, 64)
			if i, ok := idx[seq]; ok {
				ws[i].Acked = l.At
			} else {
				other = append(other, l.Text)
			}
		default:
			other = append(other, l.Text)
		}
	}
	return ws, other
}

// acked returns the acknowledged writes.
func (w *blockWriter) acked() []clustertest.Write {
	ws, _ := w.writes()
	return slices.DeleteFunc(ws, func(x clustertest.Write) bool { return x.Acked.IsZero() })
}

// waitAcks waits for k acknowledgements.
func (w *blockWriter) waitAcks(c *Cluster, k int, timeout time.Duration) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("%d writes acknowledged by %s", k, w.n.Name), timeout, func() (bool, string) {
		ws, other := w.writes()
		a := 0
		for _, x := range ws {
			if !x.Acked.IsZero() {
				a++
			}
		}
		return a >= k, fmt.Sprintf("%d of %d acknowledged; other output: %q", a, len(ws), lastN(other, 5))
	})
}

// stop ends the writer (SIGTERM, then SIGKILL) and returns its writes.
func (w *blockWriter) stop() []clustertest.Write {
	w.p.Signal(syscall.SIGTERM)
	if _, ok := w.p.Wait(10 * time.Second); !ok {
		w.p.Signal(syscall.SIGKILL)
		w.p.Wait(10 * time.Second)
	}
	ws, _ := w.writes()
	return ws
}

func lastN(s []string, n int) []string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// checkDurable reads the writers' region back from n's device and checks
// that every acknowledged write of every writer is there (the block holds
// its last acknowledged write or a later one that was sent), and that no
// block holds anything the writers did not send.
func checkDurable(t *testing.T, n *Node, writes ...[]clustertest.Write) {
	t.Helper()
	h := &clustertest.History{Blocks: writerBlocks}
	for _, ws := range writes {
		h.Writes = append(h.Writes, ws...)
	}
	slices.SortFunc(h.Writes, func(a, b clustertest.Write) int { return cmp.Compare(a.Seq, b.Seq) })
	data := n.ReadAt(device, 0, writerBlocks*clustertest.BlockSize)
	rep, err := clustertest.CheckDurable(h, data)
	if err != nil {
		t.Fatalf("%s: %v", n.Name, err)
	}
	t.Logf("%s: no acknowledged write lost: %d blocks written, %d with an acknowledged write, %d holding a later unacknowledged one",
		n.Name, rep.Written, rep.Acked, rep.InDoubt)
}
