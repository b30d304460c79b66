package volume

import (
	"fmt"

	"github.com/blkrep/blkrep/internal/control"
	"github.com/blkrep/blkrep/meta"
)

// Status reports the metadata's state and counters.
func (v *Volume) Status() *control.Metadata {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.al.Stats()
	m := &control.Metadata{
		Placement:      "internal",
		Path:           v.spec.MetaPath,
		DiskBytes:      v.spec.DataBytes,
		AreaBytes:      v.lay.AreaBytes,
		Flags:          nonNil(v.sb.Flags.Names()),
		Current:        fmt.Sprintf("%016X", v.sb.Current),
		LastShutdown:   "clean",
		BadBitmapPages: v.recovered.BadPages,
		BytesPerBit:    v.sb.BytesPerBit,
		ActivityLog: control.ALStatus{
			Extents: st.Capacity, Hot: st.Hot, InFlight: st.InFlight, Waiting: st.Waiting,
			Writes: v.alWrites.Load(), Evictions: st.Evictions, Starved: st.Starved, Seq: st.Seq,
		},
		BitmapPageWrites: v.pageWrites.Load(),
		SuperblockWrites: v.superWrites.Load(),
		Peers:            peerSlots(v.sb, func(i int) int64 { return v.bms[i].DirtyBytes() }),
	}
	if v.spec.External() {
		m.Placement = "external"
	}
	if !v.recovered.Clean {
		m.LastShutdown = "crash"
	}
	if v.failed != nil {
		m.Error = v.failed.Error()
	}
	return m
}

func peerSlots(sb *meta.Superblock, dirty func(int) int64) []control.PeerSlot {
	out := make([]control.PeerSlot, len(sb.Peers))
	for i, p := range sb.Peers {
		out[i] = control.PeerSlot{Slot: i, Node: p.Node, DirtyBytes: dirty(i), BitmapID: fmt.Sprintf("%016X", p.BitmapID), Flags: []string{}}
		if p.Flags&meta.PeerOutdated != 0 {
			out[i].Flags = append(out[i].Flags, "peer-outdated")
		}
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
