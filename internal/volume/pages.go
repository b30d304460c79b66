package volume

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/blkrep/blkrep/bitmap"
	"github.com/blkrep/blkrep/meta"
)

// pager reads and writes the on-disk bitmaps: one region of pages per
// peer slot and a table of page checksums per slot (docs/format/bitmap.md).
type pager struct {
	d   Disk
	lay meta.Layout
	// crc is each slot's checksum table as on disk (PageCRCBytes each);
	// entries change as pages are written, then the 4 KiB block holding
	// them is rewritten.
	crc [][]byte
}

// pageWrite is one page to persist: its encoding at the time it was taken.
type pageWrite struct {
	slot int
	page uint64
	data []byte
}

// loadBatch is how many pages loadBitmaps reads at once (1 MiB), so
// loading does not hold a slot's whole bitmap (32 MiB per TiB) as bytes.
const loadBatch = 256

// zeroPage and onesPage are shared, read-only encodings of a clear and a
// full page: a full sync or a clean shutdown dirties every page of a slot,
// and most of those pages are uniform.
var zeroPage, onesPage = make([]byte, meta.BitmapPageSize), bytes.Repeat([]byte{0xff}, meta.BitmapPageSize)

// bulkPages is the batch size from which pages are written plainly and
// made durable with one Flush instead of one FUA write each.
const bulkPages = 8

// loadBitmaps reads every slot's bitmap for a volume of sizeBytes. A page
// failing its checksum (torn, rotted) comes back with all bits set: its
// region will be resynced. It returns the number of such pages.
func (p *pager) loadBitmaps(sizeBytes int64, bpb uint32, slots int) ([]*bitmap.Bitmap, int, error) {
	bms := make([]*bitmap.Bitmap, slots)
	p.crc = make([][]byte, slots)
	bad := 0
	for s := range slots {
		bm, err := bitmap.New(sizeBytes, bpb)
		if err != nil {
			return nil, 0, err
		}
		if int64(bm.NumPages()) > p.lay.BitmapPages {
			return nil, 0, fmt.Errorf("bitmap of %d pages does not fit the %d of the layout", bm.NumPages(), p.lay.BitmapPages)
		}
		tab := make([]byte, p.lay.PageCRCBytes)
		if _, err := p.d.ReadAt(tab, p.lay.PageCRCOffsetOf(s, 0)); err != nil {
			return nil, 0, fmt.Errorf("reading the page checksums of peer slot %d: %w", s, err)
		}
		p.crc[s] = tab
		np := bm.NumPages()
		buf := make([]byte, min(np, loadBatch)*meta.BitmapPageSize)
		for i := range np {
			if i%loadBatch == 0 {
				n := min(np-i, loadBatch)
				if _, err := p.d.ReadAt(buf[:n*meta.BitmapPageSize], p.lay.BitmapPageOffset(s, int64(i))); err != nil {
					return nil, 0, fmt.Errorf("reading the bitmap of peer slot %d: %w", s, err)
				}
			}
			data := buf[i%loadBatch*meta.BitmapPageSize:][:meta.BitmapPageSize]
			ok := bitmap.PageChecksum(data) == binary.LittleEndian.Uint32(tab[i*meta.PageCRCSize:])
			if err := bm.LoadPage(i, data, ok); err != nil {
				// A page with a valid checksum but bits past the end:
				// not ours to trust either.
				ok = false
				if err := bm.LoadPage(i, data, false); err != nil {
					return nil, 0, err
				}
			}
			if !ok {
				bad++
			}
		}
		bms[s] = bm
	}
	return bms, bad, nil
}

// take encodes page i of slot s for writing and marks it clean in memory:
// a bit set after this dirties it again, so nothing set later is lost.
// Call with the bitmaps' lock held.
func take(bms []*bitmap.Bitmap, s int, i uint64, out []pageWrite) []pageWrite {
	var scratch [meta.BitmapPageSize]byte
	enc := bms[s].EncodePage(i, scratch[:])
	var data []byte
	switch {
	case bytes.Equal(enc, zeroPage):
		data = zeroPage
	case bytes.Equal(enc, onesPage):
		data = onesPage
	default:
		data = bytes.Clone(enc)
	}
	out = append(out, pageWrite{slot: s, page: i, data: data})
	bms[s].MarkPageClean(i)
	return out
}

// takeRange takes every dirty page covering [off, off+length) in every slot.
func takeRange(bms []*bitmap.Bitmap, off, length int64, out []pageWrite) []pageWrite {
	if off >= bms[0].Size() {
		return out
	}
	length = min(length, bms[0].Size()-off)
	for s, bm := range bms {
		first, last := bm.PagesFor(off, length)
		for i := first; i <= last; i++ {
			if bm.PageDirty(i) {
				out = take(bms, s, i, out)
			}
		}
	}
	return out
}

// takeAll takes every dirty page of every slot.
func takeAll(bms []*bitmap.Bitmap, out []pageWrite) []pageWrite {
	for s, bm := range bms {
		for _, i := range bm.DirtyPages() {
			out = take(bms, s, i, out)
		}
	}
	return out
}

// persist writes the pages and their checksum blocks and returns once all
// of it is durable. A crash in between leaves a page whose checksum does
// not match: it loads as all-set, which is safe.
func (p *pager) persist(ws []pageWrite) error {
	if len(ws) == 0 {
		return nil
	}
	bulk := len(ws) >= bulkPages
	write := p.d.WriteAtFUA
	if bulk {
		write = p.d.WriteAt
	}
	type block struct {
		slot int
		idx  int64
	}
	var blocks []block
	seen := map[block]bool{}
	for _, w := range ws {
		if _, err := write(w.data, p.lay.BitmapPageOffset(w.slot, int64(w.page))); err != nil {
			return fmt.Errorf("writing bitmap page %d of peer slot %d: %w", w.page, w.slot, err)
		}
		binary.LittleEndian.PutUint32(p.crc[w.slot][w.page*meta.PageCRCSize:], bitmap.PageChecksum(w.data))
		b := block{w.slot, int64(w.page) * meta.PageCRCSize / meta.BlockSize}
		if !seen[b] {
			seen[b] = true
			blocks = append(blocks, b)
		}
	}
	for _, b := range blocks {
		data := p.crc[b.slot][b.idx*meta.BlockSize : (b.idx+1)*meta.BlockSize]
		if _, err := write(data, p.lay.PageCRCOffsetOf(b.slot, 0)+b.idx*meta.BlockSize); err != nil {
			return fmt.Errorf("writing bitmap checksums of peer slot %d: %w", b.slot, err)
		}
	}
	if bulk {
		if err := p.d.Flush(); err != nil {
			return fmt.Errorf("syncing bitmap pages: %w", err)
		}
	}
	return nil
}

// redirty marks pages dirty again after a failed persist.
func redirty(bms []*bitmap.Bitmap, ws []pageWrite) {
	for _, w := range ws {
		bms[w.slot].MarkPageDirty(w.page)
	}
}
