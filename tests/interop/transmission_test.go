package interop

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestTransmissionAbuse sends malformed and out-of-range requests on a
// negotiated connection. Where the protocol lets the stream stay in sync,
// the connection must go on working; a fresh client must always work.
func TestTransmissionAbuse(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	size := uint64(d.size)
	baseFDs := d.fdCount(t)

	// marker is a valid WRITE request hidden at the start of a payload the
	// server must refuse: if the server failed to consume the payload it
	// would parse this and write 0xEE over markerOff.
	const markerOff = 16 << 20
	// Padded to 512 bytes so that alignment is never the reason for a refusal.
	marker := append(appendRequest(nil, request{Type: cmdWrite, Cookie: 0xbad, Offset: markerOff, Length: 4096}), fill(4096, 0xEE)...)
	marker = append(marker, make([]byte, 512-len(marker)%512)...)
	checkMarker := func(t *testing.T, s *session) {
		t.Helper()
		if b := s.mustRead(markerOff, 4096); !isZero(b) {
			t.Fatalf("the refused payload was parsed as a request: offset %d was written", markerOff)
		}
		if b := d.readDisk(t, markerOff, 4096); !isZero(b) {
			t.Fatalf("offset %d on disk was written by a refused payload", markerOff)
		}
	}
	// roundTrip proves a connection is still in sync.
	roundTrip := func(t *testing.T, s *session, off uint64) {
		t.Helper()
		want := randBytes(t, 4096)
		s.mustWrite(off, want)
		if got := s.mustRead(off, 4096); !bytes.Equal(got, want) {
			t.Fatalf("read back at %d differs", off)
		}
	}

	t.Run("bad-request-magic", func(t *testing.T) {
		s := d.connect(t, sessionOpts{structured: true})
		roundTrip(t, s, 0)
		b := appendRequest(nil, request{Type: cmdRead, Cookie: 1, Offset: 0, Length: 4096})
		binary.BigEndian.PutUint32(b, 0x12345678)
		s.mustSend(b)
		// The stream is out of sync: the server closes.
		s.expectClosed(5 * time.Second)
		d.checkServing(t)
	})

	t.Run("unknown-command", func(t *testing.T) {
		for _, opts := range []sessionOpts{{}, {structured: true, blockSize: true}} {
			s := d.connect(t, opts)
			for _, typ := range []uint16{99, 8, 0xFFFF} {
				r := s.do(typ, 0, 0, 4096, nil)
				expectErrno(t, "command type "+itoa(uint64(typ)), r.errno, errnoEINVAL)
			}
			roundTrip(t, s, 3<<20)
			s.disconnect()
		}
		d.checkServing(t)
	})

	t.Run("invalid-flags", func(t *testing.T) {
		s := d.connect(t, sessionOpts{structured: true, metaAlloc: true})
		cases := []struct {
			name        string
			typ, flags  uint16
			off         uint64
			len         uint32
			withPayload bool
		}{
			{"read+NO_HOLE", cmdRead, cmdFlagNoHole, 0, 4096, false},
			{"read+REQ_ONE", cmdRead, cmdFlagReqOne, 0, 4096, false},
			{"write+NO_HOLE", cmdWrite, cmdFlagNoHole, markerOff - 8192, uint32(len(marker)), true},
			{"write+DF", cmdWrite, cmdFlagDF, markerOff - 8192, uint32(len(marker)), true},
			{"write+bit15", cmdWrite, 1 << 15, markerOff - 8192, uint32(len(marker)), true},
			{"flush+NO_HOLE", cmdFlush, cmdFlagNoHole, 0, 0, false},
			{"trim+FAST_ZERO", cmdTrim, cmdFlagFastZero, 0, 4096, false},
			{"block_status+DF", cmdBlockStatus, cmdFlagDF, 0, 4096, false},
		}
		for _, c := range cases {
			var payload []byte
			if c.withPayload {
				payload = marker
			}
			r := s.do(c.typ, c.flags, c.off, c.len, payload)
			expectErrno(t, c.name, r.errno, errnoEINVAL)
		}
		checkMarker(t, s)
		if d := s.mustRead(markerOff-8192, 8192); !isZero(d) {
			t.Errorf("a write refused for its flags changed the disk")
		}
		roundTrip(t, s, 4<<20)
		s.disconnect()
	})

	t.Run("write-offset-overflow", func(t *testing.T) {
		for _, opts := range []sessionOpts{{}, {structured: true, blockSize: true}} {
			s := d.connect(t, opts)
			// offset + length wraps around 2^64.
			r := s.do(cmdWrite, 0, ^uint64(0)-4095, uint32(len(marker)), marker)
			expectErrno(t, "write at 2^64-4096", r.errno, errnoENOSPC)
			r = s.do(cmdWrite, cmdFlagFUA, ^uint64(0)&^511, uint32(len(marker)), marker)
			expectErrno(t, "FUA write at 2^64-512", r.errno, errnoENOSPC)
			// Exactly at and across the end of the volume.
			r = s.do(cmdWrite, 0, size, uint32(len(marker)), marker)
			expectErrno(t, "write at the end", r.errno, errnoENOSPC)
			tail := s.mustRead(size-4096, 4096)
			r = s.do(cmdWrite, 0, size-4096, uint32(len(marker))+4096, append(marker, fill(4096, 0xEE)...))
			expectErrno(t, "write across the end", r.errno, errnoENOSPC)
			if got := s.mustRead(size-4096, 4096); !bytes.Equal(got, tail) {
				t.Errorf("a write refused with ENOSPC changed the last block")
			}
			// Trim and write-zeroes past the end: ENOSPC, no payload.
			expectErrno(t, "trim across the end", s.do(cmdTrim, 0, size-4096, 8192, nil).errno, errnoENOSPC)
			expectErrno(t, "zero across the end", s.do(cmdWriteZeroes, 0, size-4096, 8192, nil).errno, errnoENOSPC)
			expectErrno(t, "trim with wrapping offset", s.do(cmdTrim, 0, ^uint64(0)-4095, 8192, nil).errno, errnoENOSPC)
			expectErrno(t, "zero with wrapping offset", s.do(cmdWriteZeroes, 0, ^uint64(0)-4095, 8192, nil).errno, errnoENOSPC)
			checkMarker(t, s)
			roundTrip(t, s, 5<<20)
			s.disconnect()
		}
		if got, want := d.diskSize(t), d.diskFileSize(t); got != want {
			t.Fatalf("disk file is %d bytes after out-of-range writes, want %d", got, want)
		}
		d.checkServing(t)
	})

	t.Run("read-out-of-range", func(t *testing.T) {
		for _, opts := range []sessionOpts{{}, {structured: true}} {
			s := d.connect(t, opts)
			for _, c := range []struct {
				off uint64
				n   uint32
			}{{size, 512}, {size - 512, 1024}, {^uint64(0) - 511, 1024}, {1 << 62, 4096}} {
				_, e := s.pread(c.off, c.n, 0)
				expectErrno(t, "read ["+itoa(c.off)+",+"+itoa(uint64(c.n))+")", e, errnoEINVAL)
			}
			expectErrno(t, "cache across the end", s.do(cmdCache, 0, size-512, 1024, nil).errno, errnoEINVAL)
			roundTrip(t, s, 6<<20)
			s.disconnect()
		}
	})

	t.Run("oversized-requests", func(t *testing.T) {
		// A 33 MiB write: EINVAL, the payload consumed, the connection goes on.
		s := d.connect(t, sessionOpts{})
		payload := make([]byte, 33<<20)
		copy(payload, marker)
		r := s.do(cmdWrite, 0, 0, uint32(len(payload)), payload)
		expectErrno(t, "33 MiB write", r.errno, errnoEINVAL)
		checkMarker(t, s)
		// 32 MiB exactly is fine.
		big := randBytes(t, 32<<20)
		s.mustWrite(32<<20, big)
		if got := s.mustRead(32<<20, 32<<20); !bytes.Equal(got, big) {
			t.Fatalf("32 MiB read back differs at %d", firstDiff(got, big))
		}
		_, e := s.pread(0, 33<<20, 0)
		expectErrno(t, "33 MiB read", e, errnoEINVAL)
		_, e = s.pread(0, 0xFFFFFFFF, 0)
		expectErrno(t, "4 GiB read", e, errnoEINVAL)
		roundTrip(t, s, 7<<20)
		s.disconnect()

		// With structured replies and DF: EOVERFLOW.
		s = d.connect(t, sessionOpts{structured: true})
		if s.info.flags&tflagSendDF == 0 {
			t.Fatalf("structured session without NBD_FLAG_SEND_DF (flags %#x)", s.info.flags)
		}
		_, e = s.pread(0, 33<<20, cmdFlagDF)
		expectErrno(t, "33 MiB read with DF", e, errnoEOVERFLOW)
		_, e = s.pread(0, 33<<20, 0)
		expectErrno(t, "33 MiB read without DF", e, errnoEINVAL)
		if got, e := s.pread(32<<20, 4096, cmdFlagDF); e != 0 || !bytes.Equal(got, big[:4096]) {
			t.Errorf("4 KiB read with DF: errno %d", e)
		}
		// Trim and zero have no payload and no 32 MiB limit.
		if e := s.do(cmdWriteZeroes, 0, 64<<20, 64<<20, nil).errno; e != 0 {
			t.Errorf("64 MiB write-zeroes: errno %d", e)
		}
		roundTrip(t, s, 8<<20)
		s.disconnect()
		d.checkServing(t)
	})

	t.Run("block-status-without-context", func(t *testing.T) {
		s := d.connect(t, sessionOpts{structured: true})
		expectErrno(t, "block status without a meta context", s.do(cmdBlockStatus, 0, 0, 4096, nil).errno, errnoEINVAL)
		roundTrip(t, s, 9<<20)
		s.disconnect()
	})

	t.Run("zero-length-requests", func(t *testing.T) {
		// libnbd calls zero-length requests "undefined"; blkrepd treats
		// them as successful no-ops (block status: EINVAL). Whatever the
		// answer, the connection must stay in sync.
		s := d.connect(t, sessionOpts{structured: true, metaAlloc: true, blockSize: true})
		for _, c := range []struct {
			name string
			typ  uint16
			off  uint64
			want uint32
		}{
			{"read", cmdRead, 0, 0}, {"read at the end", cmdRead, size, 0},
			{"write", cmdWrite, 4096, 0}, {"write at the end", cmdWrite, size, 0},
			{"trim", cmdTrim, 0, 0}, {"write-zeroes", cmdWriteZeroes, 0, 0},
			{"cache", cmdCache, 0, 0}, {"block status", cmdBlockStatus, 0, errnoEINVAL},
			{"write past the end", cmdWrite, size + 4096, errnoENOSPC},
		} {
			r := s.do(c.typ, 0, c.off, 0, nil)
			expectErrno(t, "zero-length "+c.name, r.errno, c.want)
			if c.typ == cmdRead && r.errno == 0 && len(r.data) != 0 {
				t.Errorf("zero-length read returned %d bytes", len(r.data))
			}
		}
		roundTrip(t, s, 10<<20)
		s.disconnect()
	})

	t.Run("misaligned-after-block-size", func(t *testing.T) {
		// Alignment is enforced only for clients that asked for block sizes.
		s := d.connect(t, sessionOpts{structured: true, blockSize: true})
		if s.info.minBS != 512 {
			t.Fatalf("minimum block size %d, want 512", s.info.minBS)
		}
		_, e := s.pread(1, 512, 0)
		expectErrno(t, "read at offset 1", e, errnoEINVAL)
		_, e = s.pread(0, 100, 0)
		expectErrno(t, "read of 100 bytes", e, errnoEINVAL)
		expectErrno(t, "write of 100 bytes", s.pwrite(markerOff, fill(100, 0xEE), 0), errnoEINVAL)
		expectErrno(t, "trim at 256", s.do(cmdTrim, 0, 256, 512, nil).errno, errnoEINVAL)
		roundTrip(t, s, 11<<20)
		s.disconnect()
		// Without block-size negotiation, byte ranges are fine.
		s = d.connect(t, sessionOpts{structured: true})
		want := []byte("byte-granular write")
		s.mustWrite(12<<20+3, want)
		if got := s.mustRead(12<<20+3, uint32(len(want))); !bytes.Equal(got, want) {
			t.Fatalf("unaligned read back %q", got)
		}
		s.disconnect()
	})

	t.Run("vanish-mid-write-payload", func(t *testing.T) {
		const off, n = 20 << 20, 1 << 20
		s := d.connect(t, sessionOpts{})
		old := randBytes(t, n)
		s.mustWrite(off, old)
		if e := s.flush(); e != 0 {
			t.Fatalf("flush: errno %d", e)
		}
		s.disconnect()
		// A write whose payload never completes must not be applied, not
		// even in part.
		s = d.connect(t, sessionOpts{})
		s.mustSend(append(appendRequest(nil, request{Type: cmdWrite, Cookie: 1, Offset: off, Length: n}), fill(n/4, 0xEE)...))
		s.close()
		d.checkServing(t)
		s = d.connect(t, sessionOpts{})
		if got := s.mustRead(off, n); !bytes.Equal(got, old) {
			t.Fatalf("a write whose client vanished mid-payload was applied (first change at +%d)", firstDiff(got, old))
		}
		// The same with a write across the end of the volume: the bytes
		// beyond it are never touched and the file does not grow.
		tail := s.mustRead(size-4096, 4096)
		s.disconnect()
		s = d.connect(t, sessionOpts{})
		s.mustSend(append(appendRequest(nil, request{Type: cmdWrite, Cookie: 2, Offset: size - 4096, Length: 8 << 20}), fill(3<<20, 0xEE)...))
		s.close()
		d.checkServing(t)
		if got, want := d.diskSize(t), d.diskFileSize(t); got != want {
			t.Fatalf("disk file is %d bytes, want %d", got, want)
		}
		s = d.connect(t, sessionOpts{})
		if got := s.mustRead(size-4096, 4096); !bytes.Equal(got, tail) {
			t.Fatalf("the last block changed after a refused write whose client vanished")
		}
		s.disconnect()
		// And a 33 MiB write abandoned halfway through its payload.
		s = d.connect(t, sessionOpts{})
		s.mustSend(append(appendRequest(nil, request{Type: cmdWrite, Cookie: 3, Offset: 0, Length: 33 << 20}), fill(5<<20, 0xEE)...))
		s.close()
		d.checkServing(t)
	})

	t.Run("vanish-with-requests-in-flight", func(t *testing.T) {
		// Pipeline reads and writes and hang up without reading replies:
		// the server's writes to the dead socket fail, and it carries on.
		s := d.connect(t, sessionOpts{structured: true})
		var b []byte
		for i := uint64(0); i < 64; i++ {
			b = appendRequest(b, request{Type: cmdRead, Cookie: i, Offset: i << 20, Length: 1 << 20})
			b = append(appendRequest(b, request{Type: cmdWrite, Cookie: 1000 + i, Offset: 100<<20 + i<<16, Length: 1 << 16}), fill(1<<16, byte(i))...)
		}
		// A client that reads no replies may stall its own stream: once
		// a reply is stuck in the socket, the reader serving an inline
		// write waits on it. How much gets through depends on timing,
		// so a send that times out is part of the scenario, not a
		// failure; the server must still carry on after the hang-up.
		if err := s.sendWithin(b, 2*time.Second); err != nil && !os.IsTimeout(err) {
			t.Fatalf("send %d bytes: %v", len(b), err)
		}
		s.close()
		d.checkServing(t)
	})

	d.waitFDs(t, baseFDs)
	d.waitClients(t, 0)
	d.checkServing(t)
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

// TestPipelinedOrdering keeps far more requests in flight on one connection
// than the server has workers per connection (128), mixing writes and reads
// over a few overlapping 4 KiB slots. blkrepd orders overlapping writes by
// arrival, and a read waits for the writes that arrived before it (both
// stronger than the protocol asks). So every word a read returns comes from
// the last write sent before it or from a later one (the protocol leaves a
// read racing a later write undefined), never from an older one, and each
// slot ends with the last write sent to it.
func TestPipelinedOrdering(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	s := d.connect(t, sessionOpts{structured: true})
	const (
		slots  = 8
		slotSz = 4096
		ops    = 3000
		base   = 100 << 20
	)
	// content[i] is the sequence number of the last write covering slot i;
	// covers[i] every write that covered it.
	var content [slots]uint64
	var covers [slots]map[uint64]bool
	for i := range covers {
		covers[i] = map[uint64]bool{0: true}
	}
	pattern := func(seq uint64, n int) []byte {
		b := make([]byte, n)
		for i := 0; i+8 <= n; i += 8 {
			binary.BigEndian.PutUint64(b[i:], seq)
		}
		return b
	}
	type expect struct {
		slot  int
		want  [2]uint64 // read: seq of the last write sent before it, per slot
		n     int       // slots read
		write bool
	}
	exp := map[uint64]expect{}
	var wire []byte
	rng := uint64(0x9e3779b97f4a7c15)
	next := func() uint64 { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return rng }
	for seq := uint64(1); seq <= ops; seq++ {
		slot := int(next() % slots)
		n := 1
		if slot < slots-1 && next()%4 == 0 {
			n = 2 // spans two slots: partial overlaps
		}
		off := uint64(base + slot*slotSz)
		if next()%3 == 0 {
			wire = s.encode(wire, cmdRead, 0, off, uint32(n*slotSz), nil)
			e := expect{slot: slot, n: n}
			for i := 0; i < n; i++ {
				e.want[i] = content[slot+i]
			}
			exp[s.cookie<<8|0x5a] = e
			continue
		}
		wire = s.encode(wire, cmdWrite, 0, off, uint32(n*slotSz), pattern(seq, n*slotSz))
		exp[s.cookie<<8|0x5a] = expect{write: true}
		for i := 0; i < n; i++ {
			content[slot+i] = seq
			covers[slot+i][seq] = true
		}
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- s.send(wire) }()
	racing := 0
	for range exp {
		r := s.next()
		e, ok := exp[r.cookie]
		if !ok {
			t.Fatalf("reply for unknown cookie %#x", r.cookie)
		}
		if r.errno != 0 {
			t.Fatalf("request errno %d", r.errno)
		}
		if e.write {
			continue
		}
		for i := 0; i < e.n; i++ {
			sl := e.slot + i
			for w := 0; w < slotSz; w += 8 {
				got := binary.BigEndian.Uint64(r.data[i*slotSz+w:])
				switch {
				case got == e.want[i]:
				case got > e.want[i] && covers[sl][got]:
					racing++ // a later write won the race: allowed
				default:
					t.Fatalf("read of slot %d returned data of write #%d at +%d; the last write to it sent before the read was #%d",
						sl, got, w, e.want[i])
				}
			}
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d words read from writes sent after the read", racing)
	for i := 0; i < slots; i++ {
		want := pattern(content[i], slotSz)
		if got := s.mustRead(uint64(base+i*slotSz), slotSz); !bytes.Equal(got, want) {
			t.Errorf("slot %d ends with write #%d, want #%d (the last one sent)", i, binary.BigEndian.Uint64(got), content[i])
		}
	}
	s.disconnect()
}
