package nbd

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func TestGreeting(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	if cl.hs != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", cl.hs)
	}
}

func TestList(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	cl.option(optList, nil)
	rs := cl.replies()
	if len(rs) != 2 || rs[0].typ != repServer || rs[1].typ != repAck {
		t.Fatalf("LIST replies %+v", rs)
	}
	n := binary.BigEndian.Uint32(rs[0].data)
	if got := string(rs[0].data[4 : 4+n]); got != "r0" {
		t.Fatalf("listed %q", got)
	}
	if got := string(rs[0].data[4+n:]); got != "test volume" {
		t.Fatalf("description %q", got)
	}
	// LIST with data is invalid, and the session goes on.
	cl.option(optList, []byte{1})
	if r := cl.optReply(); r.typ != repErrInvalid {
		t.Fatalf("LIST with data: %#x", r.typ)
	}
	cl.option(optList, nil)
	if rs := cl.replies(); rs[len(rs)-1].typ != repAck {
		t.Fatal("session did not continue")
	}
}

func TestInfoAndGo(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, func(e *Export) { e.BlockSize = 4096 })
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle | clientNoZeroes)
	cl.option(optInfo, goData("r0", infoName, infoDescription, infoBlockSize))
	rs := cl.replies()
	got := map[uint16][]byte{}
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repInfo {
			t.Fatalf("unexpected reply %#x", r.typ)
		}
		got[binary.BigEndian.Uint16(r.data)] = r.data[2:]
	}
	if rs[len(rs)-1].typ != repAck {
		t.Fatalf("INFO not acked: %#x", rs[len(rs)-1].typ)
	}
	ex := got[infoExport]
	if len(ex) != 10 || binary.BigEndian.Uint64(ex) != 1<<20 {
		t.Fatalf("export info % x", ex)
	}
	fl := binary.BigEndian.Uint16(ex[8:])
	want := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes |
		FlagSendFastZero | FlagCanMultiConn | FlagSendCache
	if fl != want {
		t.Fatalf("flags %#x, want %#x", fl, want)
	}
	if string(got[infoName]) != "r0" || string(got[infoDescription]) != "test volume" {
		t.Fatalf("name/description %q %q", got[infoName], got[infoDescription])
	}
	bs := got[infoBlockSize]
	if len(bs) != 12 || binary.BigEndian.Uint32(bs) != MinBlockSize ||
		binary.BigEndian.Uint32(bs[4:]) != 4096 || binary.BigEndian.Uint32(bs[8:]) != MaxPayload {
		t.Fatalf("block sizes % x", bs)
	}
	// INFO does not end the handshake; unknown export is ERR_UNKNOWN.
	cl.option(optGo, goData("nope"))
	if r := cl.optReply(); r.typ != repErrUnknown {
		t.Fatalf("GO unknown: %#x", r.typ)
	}
	// Malformed: count says 3 infos, data has 1.
	bad := goData("r0", infoName)
	binary.BigEndian.PutUint16(bad[len(bad)-4:], 3)
	cl.option(optGo, bad)
	if r := cl.optReply(); r.typ != repErrInvalid {
		t.Fatalf("GO malformed: %#x", r.typ)
	}
	// Name length beyond the data.
	cl.option(optGo, []byte{0, 0, 0x10, 0, 'r', '0', 0, 0})
	if r := cl.optReply(); r.typ != repErrInvalid {
		t.Fatalf("GO bad name length: %#x", r.typ)
	}
	// The empty name selects the listener's default export.
	cl.option(optGo, goData(""))
	if rs := cl.replies(); rs[len(rs)-1].typ != repAck {
		t.Fatal("GO with default export failed")
	}
	cl.request(CmdWrite, 0, 7, 0, 4, []byte("abcd"))
	if cookie, errno, _ := cl.simple(0); cookie != 7 || errno != 0 {
		t.Fatalf("write after GO: cookie %d errno %d", cookie, errno)
	}
}

func TestUnknownOptionContinues(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	for _, opt := range []uint32{4, 11, 99, 0xffffffff, optStartTLS} {
		cl.option(opt, []byte("junk"))
		if r := cl.optReply(); r.typ != repErrUnsup || r.opt != opt {
			t.Fatalf("option %d: reply %#x for %d", opt, r.typ, r.opt)
		}
	}
	cl.option(optGo, goData("r0"))
	if rs := cl.replies(); rs[len(rs)-1].typ != repAck {
		t.Fatal("GO after unknown options failed")
	}
}

func TestOversizedOption(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	big := make([]byte, maxOptionLen+1)
	cl.option(optGo, big)
	if r := cl.optReply(); r.typ != repErrTooBig {
		t.Fatalf("oversized option: %#x", r.typ)
	}
	cl.option(optGo, goData("r0"))
	if rs := cl.replies(); rs[len(rs)-1].typ != repAck {
		t.Fatal("GO after oversized option failed")
	}
}

func TestExportNameOption(t *testing.T) {
	for _, noZeroes := range []bool{false, true} {
		_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
		cl := dial(t, path)
		f := clientFixedNewstyle
		if noZeroes {
			f |= clientNoZeroes
		}
		cl.flags(f)
		cl.option(optExportName, []byte("r0"))
		n := 10
		if !noZeroes {
			n += 124
		}
		b := make([]byte, n)
		cl.read(b)
		if binary.BigEndian.Uint64(b) != 1<<20 {
			t.Fatalf("size % x", b[:8])
		}
		if !noZeroes && !bytes.Equal(b[10:], make([]byte, 124)) {
			t.Fatal("padding not zero")
		}
		cl.request(CmdRead, 0, 1, 0, 512, nil)
		if _, errno, _ := cl.simple(512); errno != 0 {
			t.Fatalf("read errno %d", errno)
		}
	}
	// Unknown export: the only answer EXPORT_NAME allows is closing.
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	cl.option(optExportName, []byte("missing"))
	if !cl.closed() {
		t.Fatal("server kept the connection after an unknown EXPORT_NAME")
	}
}

func TestBadClientFlagsClose(t *testing.T) {
	for _, f := range []uint32{0, 0xdeadbeef, 1 << 5} {
		_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
		cl := dial(t, path)
		cl.flags(f)
		if !cl.closed() {
			t.Fatalf("client flags %#x: connection kept", f)
		}
	}
}

func TestAbort(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	cl.option(optAbort, nil)
	if r := cl.optReply(); r.typ != repAck {
		t.Fatalf("abort: %#x", r.typ)
	}
	if !cl.closed() {
		t.Fatal("connection not closed after ABORT")
	}
}

func TestMetaContext(t *testing.T) {
	_, path := startServer(t, newMem(t, 1<<20), 1<<20, nil)
	cl := dial(t, path)
	cl.flags(clientFixedNewstyle)
	// SET before structured replies is invalid.
	cl.option(optSetMetaContext, metaData("r0", metaContextAllocation))
	if r := cl.optReply(); r.typ != repErrInvalid {
		t.Fatalf("SET without structured: %#x", r.typ)
	}
	// LIST with no query lists everything; "base:" lists the namespace.
	for _, q := range [][]string{nil, {"base:"}, {metaContextAllocation}} {
		cl.option(optListMetaContext, metaData("r0", q...))
		rs := cl.replies()
		if len(rs) != 2 || rs[0].typ != repMetaContext || string(rs[0].data[4:]) != metaContextAllocation {
			t.Fatalf("LIST %q: %+v", q, rs)
		}
	}
	cl.option(optListMetaContext, metaData("r0", "qemu:dirty-bitmap:x"))
	if rs := cl.replies(); len(rs) != 1 || rs[0].typ != repAck {
		t.Fatalf("LIST unknown context: %+v", rs)
	}
	cl.option(optListMetaContext, metaData("nope"))
	if r := cl.optReply(); r.typ != repErrUnknown {
		t.Fatalf("LIST unknown export: %#x", r.typ)
	}
	// Truncated: query count larger than the data.
	bad := metaData("r0", "base:allocation")
	binary.BigEndian.PutUint32(bad[6:], 1000)
	cl.option(optListMetaContext, bad)
	if r := cl.optReply(); r.typ != repErrInvalid {
		t.Fatalf("truncated queries: %#x", r.typ)
	}
}
