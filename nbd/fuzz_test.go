package nbd

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// fuzzServe runs one server-side session over a pipe, feeding input as the
// client's bytes and draining whatever the server answers. It returns when
// the server has closed the session.
func fuzzServe(t *testing.T, m *memBackend, input []byte, transmission bool) {
	s := NewServer(nil)
	s.HandshakeTimeout = 2 * time.Second
	if err := s.AddExport(Export{Name: "r0", Size: int64(len(m.data)), Backend: m}); err != nil {
		t.Fatal(err)
	}
	srv, cli := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if transmission {
			s.ServeTransmission(srv, "r0")
		} else {
			s.ServeConn(srv, "r0")
		}
	}()
	go io.Copy(io.Discard, cli)
	cli.Write(input)
	cli.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server did not finish the session")
	}
}

func handshakeSeeds() [][]byte {
	opt := func(b []byte, o uint32, data []byte) []byte {
		b = binary.BigEndian.AppendUint64(b, magicIHaveOpt)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	flags := binary.BigEndian.AppendUint32(nil, clientFixedNewstyle|clientNoZeroes)
	var seeds [][]byte
	seeds = append(seeds, opt(append([]byte(nil), flags...), optGo, goData("r0", infoBlockSize, infoName)))
	seeds = append(seeds, opt(opt(append([]byte(nil), flags...), optStructuredReply, nil), optSetMetaContext, metaData("r0", "base:allocation")))
	seeds = append(seeds, opt(append([]byte(nil), flags...), optList, nil))
	seeds = append(seeds, opt(append([]byte(nil), flags...), optExportName, []byte("r0")))
	seeds = append(seeds, opt(append([]byte(nil), flags...), optInfo, []byte{0, 0, 0, 9, 'x'}))
	seeds = append(seeds, opt(append([]byte(nil), flags...), 0xffff, nil))
	return seeds
}

// FuzzHandshake feeds arbitrary client bytes to the negotiation phase (and
// whatever follows it). The server must never panic, hang or touch the
// backend outside the volume.
func FuzzHandshake(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s)
		f.Add(append(s, encodeRequest(nil, &Request{Type: CmdRead, Length: 512})...))
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzServe(t, newMem(t, 64<<10), in, false)
	})
}

// FuzzRequests feeds arbitrary bytes to the transmission phase.
func FuzzRequests(f *testing.F) {
	req := func(typ, flags uint16, off uint64, length uint32, payload []byte) []byte {
		return append(encodeRequest(nil, &Request{Type: typ, Flags: flags, Cookie: 1, Offset: off, Length: length}), payload...)
	}
	f.Add(req(CmdWrite, CmdFlagFUA, 0, 8, []byte("abcdefgh")))
	f.Add(req(CmdRead, 0, 65536-512, 512, nil))
	f.Add(req(CmdTrim, 0, 0, 65536, nil))
	f.Add(req(CmdWriteZeroes, CmdFlagNoHole, 4096, 4096, nil))
	f.Add(req(CmdWrite, 0, 1<<63, 16, make([]byte, 16)))
	f.Add(req(CmdFlush, 0, 0, 0, nil))
	f.Add(append(req(CmdWrite, 0, 100, 4, []byte("abcd")), req(CmdDisc, 0, 0, 0, nil)...))
	f.Add(req(99, 0xffff, 1<<64-1, 1<<32-1, nil))
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzServe(t, newMem(t, 64<<10), in, true)
	})
}

func TestDecodeRequestRoundTrip(t *testing.T) {
	in := Request{Flags: 0x1234, Type: CmdWriteZeroes, Cookie: 0xdeadbeefcafe, Offset: 1 << 40, Length: 4096}
	var out Request
	if err := decodeRequest(encodeRequest(nil, &in), &out); err != nil || out != in {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	if err := decodeRequest(make([]byte, 27), &out); err == nil {
		t.Fatal("short header accepted")
	}
	if err := decodeRequest(make([]byte, 28), &out); err != errBadMagic {
		t.Fatalf("bad magic: %v", err)
	}
}
