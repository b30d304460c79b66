package bitmap

import (
	"math/bits"
	"slices"
)

// The bits live in chunks of BitsPerPage bits, so chunk i is on-disk page i.
// Replicated volumes' bitmaps are mostly clear (peers in sync), entirely set
// in places (full sync, torn pages) and hold a few scattered bits otherwise
// (writes missed while a peer was away), so a chunk takes the cheapest of
// four forms:
//
//   - clear: a nil pointer, nothing allocated;
//   - all set: the shared sentinel full, nothing allocated (for the last
//     chunk, "all" means the bits below NBits);
//   - array: the sorted offsets of its set bits, 2 bytes each, while it has
//     at most arrayMax of them;
//   - words: the page as it is on disk, wordsPerPage words (4 KiB).
//
// A chunk whose count reaches 0 becomes nil and one whose count reaches its
// length becomes full, at once: the count then says the form, so nil and
// full are never stored as arrays or words. An array outgrowing arrayMax
// becomes words; words shrinking to arrayMin or fewer become an array again.
// The gap between the two bounds makes each conversion cost at least
// arrayMax-arrayMin operations on that chunk, so a chunk hovering around a
// bound does not convert back and forth. A clean 1 TiB bitmap (4 KiB per
// bit) costs its 8192 chunk pointers, 64 KiB; a scattered bit costs a chunk
// header and 2 bytes.
const (
	arrayMax = 1024 // 2 KiB of offsets, half a page in words
	arrayMin = 256
)

// words is one chunk's bits in the on-disk page layout: bit j of the chunk
// is bit j%64 of word j/64. Bits past NBits are zero.
type words = [wordsPerPage]uint64

// chunk holds a chunk that is neither clear nor all set: exactly one of pos
// and w is in use.
type chunk struct {
	ones uint32   // set bits, in (0, chunk length)
	pos  []uint16 // array form: offsets of the set bits, strictly increasing
	w    *words   // words form; nil in array form
}

// full is the sentinel for an all-set chunk. It is shared: nothing ever
// writes through it, every mutation tests for it first.
var full = new(chunk)

// sparse is the set of bits [0, nbits).
//
// It keeps the last chunk header and the last words array it let go of for
// the next chunk that needs one: a bit set and cleared again in a clean
// chunk (a write in flight, then acknowledged), or cleared and set again in
// a full one, does not allocate each time.
type sparse struct {
	nbits      uint64
	chunks     []*chunk // one per page: nil (clear), full, or a chunk of its own
	spareChunk *chunk   // empty array form (maybe with capacity), or nil
	spareWords *words   // zeroed, or nil
}

func newSparse(nbits uint64) sparse {
	return sparse{nbits: nbits, chunks: make([]*chunk, (nbits+BitsPerPage-1)/BitsPerPage)}
}

// chunkLen returns the number of bits of chunk c below nbits: BitsPerPage
// except maybe for the last chunk.
func (s *sparse) chunkLen(c uint64) uint64 {
	return min(BitsPerPage, s.nbits-c<<pageShift)
}

// ones returns the number of set bits of chunk c.
func (s *sparse) ones(c uint64) uint64 {
	switch p := s.chunks[c]; p {
	case nil:
		return 0
	case full:
		return s.chunkLen(c)
	default:
		return uint64(p.ones)
	}
}

// test reports whether bit i (< nbits) is set.
func (s *sparse) test(i uint64) bool {
	switch p := s.chunks[i>>pageShift]; p {
	case nil:
		return false
	case full:
		return true
	default:
		return p.test(i & (BitsPerPage - 1))
	}
}

// set sets bits [lo, hi) of chunk c (0 <= lo < hi <= chunkLen(c)) and
// returns how many were clear.
func (s *sparse) set(c, lo, hi uint64) uint64 {
	p := s.chunks[c]
	if p == full {
		return 0
	}
	if n := s.chunkLen(c); lo == 0 && hi == n {
		added := n - s.ones(c)
		s.chunks[c] = full
		s.free(p)
		return added
	}
	if p == nil {
		p = s.newChunk()
		s.chunks[c] = p
	}
	var added uint64
	if p.w == nil {
		i := lowerBound(p.pos, lo)
		j := i
		if hi == lo+1 { // one bit: the usual 4 KiB write
			if i < len(p.pos) && uint64(p.pos[i]) == lo {
				return 0
			}
		} else {
			j = lowerBound(p.pos, hi)
		}
		added = hi - lo - uint64(j-i)
		switch {
		case added == 0:
			return 0
		case uint64(p.ones)+added <= arrayMax:
			p.pos = insertRange(p.pos, i, j, lo, hi)
		default:
			s.toWords(p)
			setWords(p.w, lo, hi)
		}
	} else if added = setWords(p.w, lo, hi); added == 0 {
		return 0
	}
	p.ones += uint32(added)
	s.settle(c, p)
	return added
}

// clear clears bits [lo, hi) of chunk c (0 <= lo < hi <= chunkLen(c)) and
// returns how many were set.
func (s *sparse) clear(c, lo, hi uint64) uint64 {
	p := s.chunks[c]
	if p == nil {
		return 0
	}
	if n := s.chunkLen(c); lo == 0 && hi == n {
		removed := s.ones(c)
		s.chunks[c] = nil
		s.free(p)
		return removed
	}
	if p == full {
		n := s.chunkLen(c)
		p = s.newChunk()
		p.ones, p.pos, p.w = uint32(n), nil, s.newWords()
		setWords(p.w, 0, n)
		s.chunks[c] = p
	}
	var removed uint64
	if p.w == nil {
		i := lowerBound(p.pos, lo)
		j := i
		if hi == lo+1 {
			if i < len(p.pos) && uint64(p.pos[i]) == lo {
				j++
			}
		} else {
			j = lowerBound(p.pos, hi)
		}
		if removed = uint64(j - i); removed == 0 {
			return 0
		}
		p.pos = slices.Delete(p.pos, i, j)
		if cap(p.pos) >= 64 && len(p.pos) <= cap(p.pos)/4 {
			p.pos = slices.Clone(p.pos) // give back what a bigger array left
		}
	} else if removed = clearWords(p.w, lo, hi); removed == 0 {
		return 0
	}
	p.ones -= uint32(removed)
	s.settle(c, p)
	return removed
}

// or sets in chunk c every bit set in the words v (which has no bits past
// chunkLen(c)) whose count is n, and returns how many were clear.
func (s *sparse) or(c uint64, v *words, n uint64) uint64 {
	p := s.chunks[c]
	switch {
	case n == 0 || p == full:
		return 0
	case n == s.chunkLen(c):
		return s.set(c, 0, n)
	case p == nil:
		p = s.newChunk()
		p.ones = uint32(n)
		if n <= arrayMax {
			p.pos = appendOffsets(p.pos, v)
		} else {
			p.pos, p.w = nil, s.newWords()
			*p.w = *v
		}
		s.chunks[c] = p
		return n
	}
	s.toWords(p)
	var added uint64
	for j, x := range v {
		if add := x &^ p.w[j]; add != 0 {
			p.w[j] |= add
			added += uint64(bits.OnesCount64(add))
		}
	}
	p.ones += uint32(added)
	s.settle(c, p)
	return added
}

// settle gives chunk c, just changed through p, its form for its count.
func (s *sparse) settle(c uint64, p *chunk) {
	switch {
	case p.ones == 0:
		s.chunks[c] = nil
		s.free(p)
	case uint64(p.ones) == s.chunkLen(c):
		s.chunks[c] = full
		s.free(p)
	case p.w != nil && p.ones <= arrayMin:
		p.pos = appendOffsets(make([]uint16, 0, p.ones), p.w)
		s.drop(p)
	}
}

// toWords turns p into words form.
func (s *sparse) toWords(p *chunk) {
	if p.w != nil {
		return
	}
	p.w = s.newWords()
	for _, o := range p.pos {
		p.w[o>>wordShift] |= 1 << (o & 63)
	}
	p.pos = nil
}

// newChunk returns an empty chunk in array form, the spare one if any.
func (s *sparse) newChunk() *chunk {
	if p := s.spareChunk; p != nil {
		s.spareChunk = nil
		return p
	}
	return new(chunk)
}

// newWords returns a zeroed words array, the spare one if any.
func (s *sparse) newWords() *words {
	if w := s.spareWords; w != nil {
		s.spareWords = nil
		return w
	}
	return new(words)
}

// free lets go of p, no longer in the table, keeping it as the spare.
func (s *sparse) free(p *chunk) {
	if p == nil || p == full {
		return
	}
	s.drop(p)
	if s.spareChunk == nil {
		p.ones, p.pos = 0, p.pos[:0]
		s.spareChunk = p
	}
}

// drop lets go of p's words array, keeping it as the spare.
func (s *sparse) drop(p *chunk) {
	if p.w == nil {
		return
	}
	if s.spareWords == nil {
		clear(p.w[:])
		s.spareWords = p.w
	}
	p.w = nil
}

// nextSet returns the first set bit in [from, end) (end <= nbits).
func (s *sparse) nextSet(from, end uint64) (uint64, bool) {
	for from < end {
		c := from >> pageShift
		base := c << pageShift
		switch p := s.chunks[c]; p {
		case nil:
			// Skip the clear chunks with one pointer test each.
			last := (end - 1) >> pageShift
			for c++; c <= last && s.chunks[c] == nil; c++ {
			}
			from = c << pageShift
			continue
		case full:
			return from, true
		default:
			if i, ok := p.nextSet(from-base, min(end-base, BitsPerPage)); ok {
				return base + i, true
			}
		}
		from = base + BitsPerPage
	}
	return 0, false
}

// nextClear returns the first clear bit in [from, end) (end <= nbits).
func (s *sparse) nextClear(from, end uint64) (uint64, bool) {
	for from < end {
		c := from >> pageShift
		base := c << pageShift
		switch p := s.chunks[c]; p {
		case nil:
			return from, true
		case full:
			last := (end - 1) >> pageShift
			for c++; c <= last && s.chunks[c] == full; c++ {
			}
			from = c << pageShift
			continue
		default:
			if i, ok := p.nextClear(from-base, min(end-base, BitsPerPage)); ok {
				return base + i, true
			}
		}
		from = base + BitsPerPage
	}
	return 0, false
}

// wordsOf returns chunk c's bits as words: its own for a words chunk,
// otherwise written into buf.
func (s *sparse) wordsOf(c uint64, buf *words) *words {
	switch p := s.chunks[c]; {
	case p == nil:
		clear(buf[:])
	case p == full:
		clear(buf[:])
		setWords(buf, 0, s.chunkLen(c))
	case p.w != nil:
		return p.w
	default:
		clear(buf[:])
		for _, o := range p.pos {
			buf[o>>wordShift] |= 1 << (o & 63)
		}
	}
	return buf
}

// clone returns a deep copy; the spare is not copied.
func (s *sparse) clone() sparse {
	c := sparse{nbits: s.nbits, chunks: slices.Clone(s.chunks)}
	for i, p := range c.chunks {
		if p == nil || p == full {
			continue
		}
		q := &chunk{ones: p.ones, pos: slices.Clone(p.pos)}
		if p.w != nil {
			q.w = new(words)
			*q.w = *p.w
		}
		c.chunks[i] = q
	}
	return c
}

// equal reports whether s and o (of the same nbits) hold the same bits.
func (s *sparse) equal(o *sparse) bool {
	var bs, bo words
	for c := range uint64(len(s.chunks)) {
		p, q := s.chunks[c], o.chunks[c]
		switch {
		case p == q:
		case s.ones(c) != o.ones(c):
			return false
		case p.w == nil && q.w == nil:
			if !slices.Equal(p.pos, q.pos) {
				return false
			}
		case *s.wordsOf(c, &bs) != *o.wordsOf(c, &bo):
			return false
		}
	}
	return true
}

func (p *chunk) test(i uint64) bool {
	if p.w != nil {
		return p.w[i>>wordShift]&(1<<(i&63)) != 0
	}
	k := lowerBound(p.pos, i)
	return k < len(p.pos) && uint64(p.pos[k]) == i
}

// nextSet returns the first set bit of p in [lo, hi) (hi <= BitsPerPage).
func (p *chunk) nextSet(lo, hi uint64) (uint64, bool) {
	if p.w == nil {
		k := lowerBound(p.pos, lo)
		if k == len(p.pos) || uint64(p.pos[k]) >= hi {
			return 0, false
		}
		return uint64(p.pos[k]), true
	}
	j, last := lo>>wordShift, (hi-1)>>wordShift
	x := p.w[j] &^ (1<<(lo&63) - 1)
	for x == 0 {
		if j++; j > last {
			return 0, false
		}
		x = p.w[j]
	}
	i := j<<wordShift + uint64(bits.TrailingZeros64(x))
	return i, i < hi
}

// nextClear returns the first clear bit of p in [lo, hi) (hi <= BitsPerPage).
func (p *chunk) nextClear(lo, hi uint64) (uint64, bool) {
	if p.w == nil {
		i := lo
		for k := lowerBound(p.pos, lo); k < len(p.pos) && uint64(p.pos[k]) == i; k++ {
			i++
		}
		return i, i < hi
	}
	j, last := lo>>wordShift, (hi-1)>>wordShift
	x := ^p.w[j] &^ (1<<(lo&63) - 1)
	for x == 0 {
		if j++; j > last {
			return 0, false
		}
		x = ^p.w[j]
	}
	i := j<<wordShift + uint64(bits.TrailingZeros64(x))
	return i, i < hi
}

// lowerBound returns the index of the first offset in pos that is >= v.
func lowerBound(pos []uint16, v uint64) int {
	lo, hi := 0, len(pos)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if uint64(pos[m]) < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// insertRange replaces pos[i:j], the offsets already in [lo, hi), with all
// of [lo, hi).
func insertRange(pos []uint16, i, j int, lo, hi uint64) []uint16 {
	n, old := int(hi-lo), len(pos)
	size := old - (j - i) + n
	pos = slices.Grow(pos, size-old)[:size]
	copy(pos[i+n:], pos[j:old])
	for k := range n {
		pos[i+k] = uint16(lo) + uint16(k)
	}
	return pos
}

// appendOffsets appends the offsets of the bits set in w.
func appendOffsets(pos []uint16, w *words) []uint16 {
	for j, x := range w {
		for x != 0 {
			pos = append(pos, uint16(j<<wordShift+bits.TrailingZeros64(x)))
			x &= x - 1
		}
	}
	return pos
}

// rangeMask returns n set bits (1 <= n <= 64) starting at bit off.
func rangeMask(off, n uint64) uint64 {
	if n == 64 {
		return ^uint64(0)
	}
	return (1<<n - 1) << off
}

// setWords sets bits [lo, hi) of w and returns how many were clear.
func setWords(w *words, lo, hi uint64) (n uint64) {
	for lo < hi {
		j := lo >> wordShift
		stop := min(hi, (j+1)<<wordShift)
		m := rangeMask(lo&63, stop-lo)
		n += uint64(bits.OnesCount64(m &^ w[j]))
		w[j] |= m
		lo = stop
	}
	return n
}

// clearWords clears bits [lo, hi) of w and returns how many were set.
func clearWords(w *words, lo, hi uint64) (n uint64) {
	for lo < hi {
		j := lo >> wordShift
		stop := min(hi, (j+1)<<wordShift)
		m := rangeMask(lo&63, stop-lo)
		n += uint64(bits.OnesCount64(m & w[j]))
		w[j] &^= m
		lo = stop
	}
	return n
}
