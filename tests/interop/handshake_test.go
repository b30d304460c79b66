package interop

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"
)

// TestHandshakeAbuse sends the daemon handshakes no real client sends. After
// each one the daemon must still serve a fresh client correctly, and in the
// end it must hold no more file descriptors than before (every abandoned
// connection closed on the server side too).
func TestHandshakeAbuse(t *testing.T) {
	d := startDaemon(t, daemonOpts{})
	d.checkServing(t)
	baseFDs := d.fdCount(t)

	t.Run("garbage-client-flags", func(t *testing.T) {
		w := d.dial(t)
		w.greeting()
		// Unknown client flags: the server MUST drop the connection.
		w.mustSend([]byte{0xde, 0xad, 0xbe, 0xef})
		w.expectClosed(5 * time.Second)
		d.checkServing(t)
	})

	t.Run("garbage-instead-of-handshake", func(t *testing.T) {
		w := d.dial(t)
		// An HTTP client knocking on the NBD socket, not even reading the greeting.
		w.send([]byte("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + string(fill(4096, 'A'))))
		// The server greets, reads "GET " as client flags and hangs up.
		w.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := io.Copy(io.Discard, w.br)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("server did not hang up on garbage: %v", err)
		}
		if n > 18 {
			t.Fatalf("server sent %d bytes, more than its greeting, in reply to garbage", n)
		}
		d.checkServing(t)
	})

	t.Run("no-fixed-newstyle-then-export-name", func(t *testing.T) {
		// Client flags 0 (plain newstyle). The server may refuse (close)
		// or honour fixed newstyle anyway; either way it must not hang or
		// answer garbage.
		w := d.dial(t)
		w.greeting()
		// One write: a server that refuses may hang up before reading the option.
		w.send(appendOption(binary.BigEndian.AppendUint32(nil, 0), optExportName, []byte(volumeName)))
		w.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 134)
		n, err := io.ReadFull(w.br, b)
		switch {
		case n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
			// refused
		case err == nil:
			if sz := binary.BigEndian.Uint64(b); sz != uint64(d.size) {
				t.Errorf("export size %d, want %d", sz, d.size)
			}
			if !isZero(b[10:]) {
				t.Errorf("124 reserved bytes are not zero")
			}
		default:
			t.Fatalf("after EXPORT_NAME without FIXED_NEWSTYLE: read %d bytes, %v", n, err)
		}
		w.close()
		d.checkServing(t)
	})

	t.Run("truncated-handshake", func(t *testing.T) {
		steps := []struct {
			name string
			send []byte
		}{
			{"after-greeting", nil},
			{"mid-client-flags", []byte{0, 0}},
			{"mid-option-header", binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes), uint32(ihaveOpt>>32))},
			{"mid-option-data", appendOption(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes), optGo, infoGoData(volumeName, infoBlockSize))[:4+16+5]},
			{"mid-option-length", append(binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes),
				appendOption(nil, optGo, nil)[:14]...)}, // cut inside the length field
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				w := d.dial(t)
				w.greeting()
				if st.send != nil {
					w.mustSend(st.send)
				}
				w.close()
				d.checkServing(t)
			})
		}
		// Same with a client that declares 100 bytes of option data and sends 10.
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		b := binary.BigEndian.AppendUint64(nil, ihaveOpt)
		b = binary.BigEndian.AppendUint32(b, optGo)
		b = binary.BigEndian.AppendUint32(b, 100)
		w.mustSend(append(b, fill(10, 'x')...))
		w.close()
		d.checkServing(t)
	})

	t.Run("option-length-4GiB", func(t *testing.T) {
		// NBD_OPT_GO declaring 0xFFFFFFFF bytes of data. The server must not
		// allocate that: it may discard the data and refuse the option, or
		// hang up, and it keeps serving others meanwhile.
		vmBefore := d.procStatus(t, "VmSize")
		rssBefore := d.procStatus(t, "VmRSS")
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		b := binary.BigEndian.AppendUint64(nil, ihaveOpt)
		b = binary.BigEndian.AppendUint32(b, optGo)
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
		w.mustSend(b)
		const firstChunk = 32 << 20
		chunk := fill(1<<20, 0xa5)
		sent := int64(0)
		closed := false
		for sent < firstChunk && !closed {
			if err := w.send(chunk); err != nil {
				closed = true // the server hung up: allowed
				break
			}
			sent += int64(len(chunk))
		}
		// 32 MiB into the option the daemon must hold neither the 4 GiB
		// nor the 32 MiB received so far.
		vmAfter := d.procStatus(t, "VmSize")
		rssAfter := d.procStatus(t, "VmRSS")
		t.Logf("daemon VmSize %d -> %d kB, VmRSS %d -> %d kB after %d MiB of a 4 GiB option (closed=%v)",
			vmBefore, vmAfter, rssBefore, rssAfter, sent>>20, closed)
		if vmAfter-vmBefore > 1<<20 { // kB: 1 GiB
			t.Errorf("daemon VmSize grew by %d MiB while a client declared a 4 GiB option: it allocated it", (vmAfter-vmBefore)>>10)
		}
		if rssAfter-rssBefore > 24<<10 {
			t.Errorf("daemon RSS grew by %d MiB while receiving %d MiB of an oversized option: it buffers it", (rssAfter-rssBefore)>>10, sent>>20)
		}
		// Others are served while that client is still at it.
		d.checkServing(t)
		if closed {
			w.expectClosed(5 * time.Second)
			return
		}
		// Finish the option. A server that discards it must answer with an
		// error (the spec's NBD_REP_ERR_TOO_BIG) and go on negotiating.
		start := time.Now()
		remaining := int64(0xFFFFFFFF) - sent
		big := fill(4<<20, 0xa5)
		for remaining > 0 {
			n := min(remaining, int64(len(big)))
			if err := w.send(big[:n]); err != nil {
				// Hanging up is allowed; an allocation is what must not happen.
				t.Logf("server hung up after %d MiB of the option: %v", (0xFFFFFFFF-remaining)>>20, err)
				d.checkServing(t)
				return
			}
			remaining -= n
		}
		t.Logf("sent the whole 4 GiB option in %v", time.Since(start).Round(time.Millisecond))
		r := w.readOptReply()
		if r.opt != optGo || !r.isErr() {
			t.Fatalf("reply to a 4 GiB NBD_OPT_GO: %v, want an error reply", r)
		}
		if r.typ != repErrTooBig {
			t.Logf("error reply %#x (NBD_REP_ERR_TOO_BIG is %#x)", r.typ, repErrTooBig)
		}
		// The session continues.
		s := w.negotiateAfterHello(sessionOpts{structured: true})
		want := randBytes(t, 4096)
		s.mustWrite(0, want)
		if got := s.mustRead(0, 4096); !bytes.Equal(got, want) {
			t.Fatalf("session after the oversized option reads back other data")
		}
		s.disconnect()
		d.checkServing(t)
	})

	t.Run("unknown-options", func(t *testing.T) {
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		for _, opt := range []uint32{0, 4, 0xBEEF, 0x7FFFFFFF, 0xFFFFFFFF} {
			w.sendOption(opt, []byte("some option data the server does not understand"))
			r := w.readOptReply()
			if r.opt != opt || r.typ != repErrUnsup {
				t.Errorf("unknown option %#x: got %v, want NBD_REP_ERR_UNSUP", opt, r)
			}
		}
		// NBD_OPT_STARTTLS: no TLS here; an error reply, and the session continues.
		w.sendOption(optStartTLS, nil)
		if r := w.readOptReply(); r.opt != optStartTLS || !r.isErr() {
			t.Errorf("NBD_OPT_STARTTLS: got %v, want an error reply", r)
		}
		// Structured replies twice is harmless.
		s := w.negotiateAfterHello(sessionOpts{structured: true, blockSize: true})
		if s.info.size != uint64(d.size) {
			t.Errorf("size after unknown options: %d", s.info.size)
		}
		want := randBytes(t, 8192)
		s.mustWrite(1<<20, want)
		if got := s.mustRead(1<<20, 8192); !bytes.Equal(got, want) {
			t.Fatalf("read back differs")
		}
		s.disconnect()
		d.checkServing(t)
	})

	t.Run("list-info-go", func(t *testing.T) {
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		w.sendOption(optList, nil)
		var names []string
		for {
			r := w.readOptReply()
			if r.typ == repAck {
				break
			}
			if r.typ != repServer || len(r.data) < 4 {
				t.Fatalf("NBD_OPT_LIST: %v", r)
			}
			n := binary.BigEndian.Uint32(r.data)
			if int(n) > len(r.data)-4 {
				t.Fatalf("NBD_REP_SERVER name length %d in %d bytes", n, len(r.data))
			}
			names = append(names, string(r.data[4:4+n]))
		}
		if len(names) != 1 || names[0] != volumeName {
			t.Errorf("NBD_OPT_LIST: %q, want [%q]", names, volumeName)
		}
		// NBD_OPT_LIST with data is invalid, and the session continues.
		w.sendOption(optList, []byte("x"))
		if r := w.readOptReply(); r.typ != repErrInvalid {
			t.Errorf("NBD_OPT_LIST with data: %v, want NBD_REP_ERR_INVALID", r)
		}
		// INFO for an unknown export: NBD_REP_ERR_UNKNOWN, session continues.
		if _, er := w.infoGo(optInfo, "no-such-volume"); er == nil || er.typ != repErrUnknown {
			t.Errorf("NBD_OPT_INFO no-such-volume: %v, want NBD_REP_ERR_UNKNOWN", er)
		}
		if _, er := w.infoGo(optGo, "no-such-volume", infoBlockSize); er == nil || er.typ != repErrUnknown {
			t.Errorf("NBD_OPT_GO no-such-volume: %v, want NBD_REP_ERR_UNKNOWN", er)
		}
		ei, er := w.infoGo(optInfo, volumeName, infoName, infoDesc, infoBlockSize)
		if er != nil {
			t.Fatalf("NBD_OPT_INFO: %v", er)
		}
		if ei.size != uint64(d.size) || ei.minBS != 512 || ei.prefBS != 4096 || ei.maxBS != 32<<20 {
			t.Errorf("NBD_OPT_INFO: %+v, want size %d, block sizes 512/4096/32MiB", ei, d.size)
		}
		if ei.description != "blkrep interop test volume" {
			t.Errorf("NBD_INFO_DESCRIPTION %q", ei.description)
		}
		// Then GO on the same connection.
		ei, er = w.infoGo(optGo, volumeName)
		if er != nil {
			t.Fatalf("NBD_OPT_GO: %v", er)
		}
		s := &session{wire: w, info: ei, pending: map[uint64]request{}}
		s.mustWrite(0, fill(512, 7))
		s.disconnect()
	})

	t.Run("export-name-unknown", func(t *testing.T) {
		// EXPORT_NAME cannot report an error: the server MUST close.
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		w.sendOption(optExportName, []byte("no-such-volume"))
		w.expectClosed(5 * time.Second)
		d.checkServing(t)
	})

	t.Run("export-name-with-zeroes", func(t *testing.T) {
		// Without NO_ZEROES the reply carries 124 zero bytes.
		w := d.dial(t)
		w.hello(clientFixedNewstyle)
		w.sendOption(optExportName, []byte(volumeName))
		b := w.read(134)
		if sz := binary.BigEndian.Uint64(b); sz != uint64(d.size) {
			t.Errorf("size %d, want %d", sz, d.size)
		}
		f := binary.BigEndian.Uint16(b[8:])
		if f&tflagHasFlags == 0 || f&tflagReadOnly != 0 || f&tflagSendDF != 0 {
			t.Errorf("transmission flags %#x (no structured replies: DF must be clear)", f)
		}
		if !isZero(b[10:]) {
			t.Errorf("reserved bytes not zero")
		}
		s := &session{wire: w, pending: map[uint64]request{}}
		want := randBytes(t, 4096)
		s.mustWrite(2<<20, want)
		if got := s.mustRead(2<<20, 4096); !bytes.Equal(got, want) {
			t.Fatalf("read back differs")
		}
		s.disconnect()
	})

	t.Run("abort", func(t *testing.T) {
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		w.sendOption(optAbort, nil)
		// The server MUST reply ACK; clients must tolerate a close.
		w.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		var h [20]byte
		if n, err := io.ReadFull(w.br, h[:]); err == nil {
			if binary.BigEndian.Uint32(h[12:]) != repAck {
				t.Errorf("reply to NBD_OPT_ABORT: % x", h)
			}
			w.expectClosed(5 * time.Second)
		} else if n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Errorf("after NBD_OPT_ABORT: %d bytes, %v", n, err)
		}
	})

	t.Run("meta-context-without-structured", func(t *testing.T) {
		w := d.dial(t)
		w.hello(clientFixedNewstyle | clientNoZeroes)
		w.sendOption(optSetMetaContext, metaContextData(volumeName, metaContextAllocation))
		if r := w.readOptReply(); !r.isErr() {
			t.Errorf("SET_META_CONTEXT before STRUCTURED_REPLY: %v, want an error", r)
		}
		// Malformed meta context data: counts beyond the option length.
		w.sendOption(optStructuredReply, nil)
		w.expectOptReply(optStructuredReply, repAck)
		bad := binary.BigEndian.AppendUint32(nil, uint32(len(volumeName)))
		bad = append(bad, volumeName...)
		bad = binary.BigEndian.AppendUint32(bad, 0xFFFFFFF0) // query count
		w.sendOption(optSetMetaContext, bad)
		if r := w.readOptReply(); r.typ != repErrInvalid {
			t.Errorf("SET_META_CONTEXT with a huge query count: %v, want NBD_REP_ERR_INVALID", r)
		}
		w.sendOption(optListMetaContext, metaContextData(volumeName))
		r := w.readOptReply()
		if r.typ != repMetaContext || string(r.data[4:]) != metaContextAllocation {
			t.Errorf("LIST_META_CONTEXT: %v, want base:allocation", r)
		}
		w.expectOptReply(optListMetaContext, repAck)
		w.sendOption(optAbort, nil)
		w.close()
	})

	d.waitFDs(t, baseFDs)
	d.checkServing(t)
}
