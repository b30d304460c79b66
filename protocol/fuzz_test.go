package protocol

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"
)

// The fuzz targets check, for every decoder: it never panics; it fails
// only with ErrMalformed; what it accepts is within the limits given
// (offsets and lengths inside the volume, bits inside the bitmap); and
// re-encoding an accepted value and decoding it again gives the same
// value. Where the encoding is canonical the re-encoding is also the
// same bytes, so no message has two spellings. Seeds are the round-trip
// tables' messages.

func checkErr(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, ErrMalformed) {
		t.Fatalf("error %v does not wrap ErrMalformed", err)
	}
}

// inVolume reports whether [off, off+n) is a non-empty range inside a
// volume of size bytes, without overflow.
func inVolume(off uint64, n uint32, size uint64) bool {
	return n > 0 && off <= size && uint64(n) <= size-off
}

func FuzzDecodeHeader(f *testing.F) {
	for typ := range msgNames {
		b := make([]byte, HeaderSize)
		PutHeader(b, typ, 8)
		f.Add(b)
	}
	b := make([]byte, HeaderSize)
	PutHeader(b, MsgData, MaxPayload)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeHeader(b)
		checkErr(t, err)
		if err != nil {
			return
		}
		if h.Length > MaxPayload {
			t.Fatalf("accepted a payload of %d bytes", h.Length)
		}
		if _, ok := msgNames[h.Type]; !ok {
			t.Fatalf("accepted unknown type %d", h.Type)
		}
		re := make([]byte, HeaderSize)
		PutHeader(re, h.Type, int(h.Length))
		if !bytes.Equal(re, b[:HeaderSize]) {
			t.Fatalf("re-encoded header %x, decoded from %x", re, b[:HeaderSize])
		}
		if h2, err := DecodeHeader(re); err != nil || h2 != h {
			t.Fatalf("re-decoded %+v, %v; want %+v", h2, err, h)
		}
	})
}

func FuzzDecodeHello(f *testing.F) {
	for _, h := range testHellos() {
		f.Add(h.Append(nil))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		h, err := DecodeHello(p)
		checkErr(t, err)
		if err != nil {
			return
		}
		for _, s := range []string{h.Cluster, h.Volume, h.From, h.To} {
			if len(s) > MaxNameBytes {
				t.Fatalf("accepted a name of %d bytes", len(s))
			}
		}
		if len(h.MAC) != 0 && len(h.MAC) != MACSize {
			t.Fatalf("accepted a MAC of %d bytes", len(h.MAC))
		}
		if _, ok := Version(h.MinVersion, h.MaxVersion, h.MinVersion, h.MaxVersion); !ok || h.MinVersion == 0 {
			t.Fatalf("accepted version range %d..%d", h.MinVersion, h.MaxVersion)
		}
		re := h.Append(nil)
		if !bytes.Equal(re, p) {
			t.Fatalf("re-encoded %x, decoded from %x", re, p)
		}
		h2, err := DecodeHello(re)
		if err != nil || !helloEqual(h, h2) {
			t.Fatalf("re-decoded %+v, %v; want %+v", h2, err, h)
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	for _, s := range testStates() {
		f.Add(s.Append(nil))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		s, err := DecodeState(p)
		checkErr(t, err)
		if err != nil {
			return
		}
		if len(s.History) > HistoryLen || s.Flags&^knownStateFlags != 0 || s.Role > RolePrimary {
			t.Fatalf("accepted %+v", s)
		}
		re := s.Append(nil)
		if !bytes.Equal(re, p) {
			t.Fatalf("re-encoded %x, decoded from %x", re, p)
		}
		s2, err := DecodeState(re)
		if err != nil || !stateEqual(s, s2) {
			t.Fatalf("re-decoded %+v, %v; want %+v", s2, err, s)
		}
	})
}

func FuzzDecodeBitmap(f *testing.F) {
	for _, tc := range testBitmaps() {
		f.Add(tc.m.Append(nil), tc.maxBits)
	}
	f.Add(rawBitmap(2, 0, 3, 1, 0), uint64(100))
	f.Add(rawBitmap(2, 10, 5, ^uint64(0)-10, 1), ^uint64(0))
	f.Fuzz(func(t *testing.T, p []byte, maxBits uint64) {
		m, err := DecodeBitmap(p, maxBits)
		checkErr(t, err)
		if err != nil {
			return
		}
		var end uint64
		for i, r := range m.Runs {
			if r.Len == 0 || (i > 0 && r.Start <= end) || r.Start < end ||
				r.Start+r.Len < r.Start || r.Start+r.Len > maxBits {
				t.Fatalf("accepted run %d %+v after end %d, maxBits %d", i, r, end, maxBits)
			}
			end = r.Start + r.Len
		}
		// Uvarints may be spelt with redundant bytes: compare values.
		re := m.Append(nil)
		if len(re) > len(p) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(p), len(re))
		}
		m2, err := DecodeBitmap(re, maxBits)
		if err != nil || !slices.Equal(m.Runs, m2.Runs) {
			t.Fatalf("re-decoded %v, %v; want %v", m2.Runs, err, m.Runs)
		}
	})
}

func FuzzDecodeData(f *testing.F) {
	for _, m := range testData() {
		f.Add(appendData(nil, &m), uint64(testSize))
	}
	small := Data{Seq: 9, Offset: 4, Length: 4, Data: []byte("abcd")}
	f.Add(appendData(nil, &small), uint64(8))
	f.Fuzz(func(t *testing.T, p []byte, size uint64) {
		m, err := DecodeData(p, size)
		checkErr(t, err)
		if err != nil {
			return
		}
		if !inVolume(m.Offset, m.Length, size) {
			t.Fatalf("accepted [%d, +%d) in a %d-byte volume", m.Offset, m.Length, size)
		}
		if m.Kind == KindWrite && (len(m.Data) != int(m.Length) || m.Length > MaxData) ||
			m.Kind != KindWrite && m.Data != nil {
			t.Fatalf("accepted kind %d, length %d with %d data bytes", m.Kind, m.Length, len(m.Data))
		}
		if m.PayloadLen() != len(p) {
			t.Fatalf("PayloadLen %d, payload %d bytes", m.PayloadLen(), len(p))
		}
		re := appendData(nil, &m)
		if !bytes.Equal(re, p) {
			t.Fatalf("re-encoded %x, decoded from %x", re, p)
		}
		m2, err := DecodeData(re, size)
		if err != nil || !dataEqual(m, m2) {
			t.Fatalf("re-decoded %+v, %v; want %+v", m2, err, m)
		}
	})
}

func FuzzDecodeRange(f *testing.F) {
	for _, r := range testRanges() {
		f.Add(r.Append(nil, false), uint64(testSize), false)
		f.Add(r.Append(nil, true), uint64(testSize), true)
	}
	f.Fuzz(func(t *testing.T, p []byte, size uint64, withSum bool) {
		typ := MsgResyncReq
		if withSum {
			typ = MsgCsumReq
		}
		r, err := DecodeRange(p, typ, size, withSum)
		checkErr(t, err)
		if err != nil {
			return
		}
		if !inVolume(r.Offset, r.Length, size) || r.Length > MaxRange {
			t.Fatalf("accepted [%d, +%d) in a %d-byte volume", r.Offset, r.Length, size)
		}
		if !withSum && r.Sum != [SumSize]byte{} {
			t.Fatal("a sum without withSum")
		}
		re := r.Append(nil, withSum)
		if !bytes.Equal(re, p) {
			t.Fatalf("re-encoded %x, decoded from %x", re, p)
		}
		r2, err := DecodeRange(re, typ, size, withSum)
		if err != nil || r2 != r {
			t.Fatalf("re-decoded %+v, %v; want %+v", r2, err, r)
		}
	})
}

func FuzzDecodeResyncData(f *testing.F) {
	for _, m := range testResyncData() {
		f.Add(m.Append(nil), uint64(testSize))
	}
	f.Add((&ResyncData{Offset: 1, Length: 2, Data: []byte{7, 8}}).Append(nil), uint64(3))
	f.Fuzz(func(t *testing.T, p []byte, size uint64) {
		m, err := DecodeResyncData(p, size)
		checkErr(t, err)
		if err != nil {
			return
		}
		if !inVolume(m.Offset, m.Length, size) || m.Length > MaxRange {
			t.Fatalf("accepted [%d, +%d) in a %d-byte volume", m.Offset, m.Length, size)
		}
		if m.Hole && m.Data != nil || !m.Hole && len(m.Data) != int(m.Length) {
			t.Fatalf("accepted hole=%v, length %d with %d data bytes", m.Hole, m.Length, len(m.Data))
		}
		re := m.Append(nil)
		if !bytes.Equal(re, p) {
			t.Fatalf("re-encoded %x, decoded from %x", re, p)
		}
		m2, err := DecodeResyncData(re, size)
		if err != nil || !resyncDataEqual(m, m2) {
			t.Fatalf("re-decoded %+v, %v; want %+v", m2, err, m)
		}
	})
}

// roundTrip decodes a payload of type typ with its decoder (as the
// daemon would, for a testSize volume) and, when it decodes, checks that
// re-encoding gives the same bytes (Bitmap: the same runs).
func roundTrip(t *testing.T, typ MsgType, p []byte) {
	t.Helper()
	var err error
	var re []byte
	switch typ {
	case MsgHello:
		var h Hello
		if h, err = DecodeHello(p); err == nil {
			re = h.Append(nil)
		}
	case MsgAuth:
		var a Auth
		if a, err = DecodeAuth(p); err == nil {
			re = a.Append(nil)
		}
	case MsgRefuse:
		var r Refuse
		if r, err = DecodeRefuse(p); err == nil {
			re = r.Append(nil)
		}
	case MsgState, MsgGens:
		var s State
		if s, err = DecodeState(p); err == nil {
			re = s.Append(nil)
		}
	case MsgBitmap:
		var m, m2 BitmapMsg
		if m, err = DecodeBitmap(p, testSize/4096); err == nil {
			m2, err = DecodeBitmap(m.Append(nil), testSize/4096)
			if err != nil || !slices.Equal(m.Runs, m2.Runs) {
				t.Fatalf("bitmap re-decoded %v, %v; want %v", m2.Runs, err, m.Runs)
			}
			re = p
		}
	case MsgData:
		var m Data
		if m, err = DecodeData(p, testSize); err == nil {
			re = appendData(nil, &m)
		}
	case MsgRecvAck, MsgWriteAck, MsgNegAck, MsgBarrier, MsgBarrierAck, MsgPing, MsgPingAck, MsgResyncDone:
		var u U64
		if u, err = DecodeU64(p, typ); err == nil {
			re = u.Append(nil)
		}
	case MsgResyncReq, MsgResyncSame, MsgResyncAck, MsgVerifyReq, MsgCsumReq, MsgVerifyRep:
		withSum := typ == MsgCsumReq || typ == MsgVerifyRep
		var r Range
		if r, err = DecodeRange(p, typ, testSize, withSum); err == nil {
			re = r.Append(nil, withSum)
		}
	case MsgResyncData:
		var m ResyncData
		if m, err = DecodeResyncData(p, testSize); err == nil {
			re = m.Append(nil)
		}
	default:
		return // no payload: BitmapDone, VerifyDone
	}
	checkErr(t, err)
	if err == nil && !bytes.Equal(re, p) {
		t.Fatalf("%s re-encoded %x, decoded from %x", typ, re, p)
	}
}

func FuzzReadMessage(f *testing.F) {
	var stream []byte
	frame := func(typ MsgType, p []byte) []byte {
		b := make([]byte, HeaderSize, HeaderSize+len(p))
		PutHeader(b, typ, len(p))
		return append(b, p...)
	}
	for _, v := range []struct {
		typ MsgType
		p   []byte
	}{
		{MsgHello, testHellos()[1].Append(nil)},
		{MsgAuth, (&Auth{}).Append(nil)},
		{MsgState, testStates()[1].Append(nil)},
		{MsgBitmap, testBitmaps()[2].m.Append(nil)},
		{MsgBitmapDone, nil},
		{MsgData, appendData(nil, &testData()[1])},
		{MsgBarrier, U64{3}.Append(nil)},
		{MsgCsumReq, testRanges()[2].Append(nil, true)},
		{MsgResyncData, testResyncData()[2].Append(nil)},
		{MsgRefuse, (&Refuse{Reason: "bye"}).Append(nil)},
	} {
		m := frame(v.typ, v.p)
		f.Add(m)
		stream = append(stream, m...)
	}
	f.Add(stream)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var buf []byte
		for {
			at := len(b) - r.Len()
			typ, p, nb, err := ReadMessage(r, buf)
			buf = nb
			if err != nil {
				if err != io.EOF && err != io.ErrUnexpectedEOF {
					checkErr(t, err)
				}
				if err == io.EOF && at != len(b) {
					t.Fatalf("io.EOF with %d bytes left", len(b)-at)
				}
				return
			}
			if want := b[at : at+HeaderSize+len(p)]; !bytes.Equal(frame(typ, p), want) {
				t.Fatalf("message at %d re-framed as %x, read from %x", at, frame(typ, p), want)
			}
			roundTrip(t, typ, p)
		}
	})
}
