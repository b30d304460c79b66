package qemu

import (
	"testing"
	"time"

	"github.com/blkrep/blkrep/internal/clustertest"
)

// Scenario 4: the primary's cable is cut (QMP set_link off) under a block
// writer. Alpha must stop acknowledging writes, beta must be elected and
// serve them, the two must never acknowledge at the same time; once the
// cable is back alpha rejoins as Secondary, every write either node
// acknowledged is on the volume and both disks converge byte for byte.
func TestCableCut(t *testing.T) {
	c := replicated(t, Replicated{})
	alpha, beta := c.Node("alpha"), c.Node("beta")

	wa := alpha.StartWriter(1, 1)
	wa.waitAcks(c, 100, time.Minute)
	cut := time.Now()
	alpha.CutLink()
	c.WaitFor("beta Primary after alpha's cable was cut", time.Minute, beta.isPrimary)
	t.Logf("beta serves writes %.1fs after the cut", time.Since(cut).Seconds())

	// Alpha stops acknowledging: with protocol C each write needs beta,
	// and alone it has no quorum to write without it. An acknowledgement
	// that left alpha just before the cut may arrive a little later.
	grace := cut.Add(time.Second)
	var lastA time.Time
	for _, w := range wa.acked() {
		if w.Acked.After(grace) {
			t.Errorf("alpha acknowledged %v at %s, %.1fs after its cable was cut", w.Tag, w.Acked.Format("15:04:05.000"), w.Acked.Sub(cut).Seconds())
		}
		if w.Acked.After(lastA) {
			lastA = w.Acked
		}
	}

	wb := beta.StartWriter(1_000_000_000, 2)
	wb.waitAcks(c, 100, time.Minute)
	firstB := time.Time{}
	for _, w := range wb.acked() {
		if firstB.IsZero() || w.Acked.Before(firstB) {
			firstB = w.Acked
		}
	}
	if !lastA.Before(firstB) {
		t.Fatalf("two primaries acknowledged writes at once: alpha until %s, beta from %s",
			lastA.Format("15:04:05.000"), firstB.Format("15:04:05.000"))
	}
	t.Logf("one primary at a time: alpha's last acknowledgement %s, beta's first %s (%.1fs later)",
		lastA.Format("15:04:05.000"), firstB.Format("15:04:05.000"), firstB.Sub(lastA).Seconds())

	// Heal: alpha learns of beta's term, steps down and resyncs.
	alpha.HealLink()
	c.waitRejoined("beta", "alpha")
	bw := wb.stop()
	aw := wa.stop()
	var stuck []clustertest.Write
	for _, w := range aw {
		if w.Acked.IsZero() {
			stuck = append(stuck, w)
		}
	}
	t.Logf("alpha: %d writes acknowledged, %d never (held after the cut; they must not be on the volume unless beta's data has them)",
		len(aw)-len(stuck), len(stuck))
	checkDurable(t, beta, aw, bw)
	c.WaitFor("in sync after the writers stopped", time.Minute, func() (bool, string) { return c.inSync("beta", "alpha") })
	c.SameData("alpha", "beta")
}
