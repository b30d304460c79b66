package kernel

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// unhex decodes a hex dump with spaces and "|" separators.
func unhex(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.NewReplacer(" ", "", "|", "", "\n", "", "\t", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

func skipBigEndian(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("expected bytes are written for little-endian hosts")
	}
}

// Netlink attributes: u16 length (header included, padding excluded), u16
// type, payload padded to 4 bytes; host byte order.
func TestEncodeConnect(t *testing.T) {
	skipBigEndian(t)
	tests := []struct {
		name string
		o    Options
		fd   int
		want string
	}{
		{
			name: "all attributes",
			o: Options{
				Index: 3, SizeBytes: 1 << 20, Timeout: 30 * time.Second,
				DeadConnTimeout: 2 * time.Minute, ServerFlags: 1 | 4 | 8,
				Backend: "blkrep:r0", DestroyOnDisconnect: true,
			},
			fd: 7,
			want: `
				08 00 01 00 | 03 00 00 00                         INDEX u32 3
				0c 00 02 00 | 00 00 10 00 00 00 00 00             SIZE_BYTES u64 1 MiB
				0c 00 03 00 | 00 10 00 00 00 00 00 00             BLOCK_SIZE_BYTES u64 4096 (default)
				0c 00 04 00 | 1e 00 00 00 00 00 00 00             TIMEOUT u64 30 s
				0c 00 05 00 | 0d 00 00 00 00 00 00 00             SERVER_FLAGS u64 HAS_FLAGS|SEND_FLUSH|SEND_FUA
				0c 00 06 00 | 01 00 00 00 00 00 00 00             CLIENT_FLAGS u64 DESTROY_ON_DISCONNECT
				10 00 07 00 | 0c 00 01 00 | 08 00 01 00 | 07 00 00 00   SOCKETS{SOCK_ITEM{SOCK_FD u32 7}}
				0c 00 08 00 | 78 00 00 00 00 00 00 00             DEAD_CONN_TIMEOUT u64 120 s
				0e 00 0a 00 | 62 6c 6b 72 65 70 3a 72 30 00 00 00 BACKEND_IDENTIFIER "blkrep:r0\0" + 2 pad`,
		},
		{
			name: "kernel picks index, no backend, sub-second timeout rounds up",
			o:    Options{Index: -1, SizeBytes: 8192, BlockSize: 512, Timeout: 1500 * time.Millisecond},
			fd:   300,
			want: `
				0c 00 02 00 | 00 20 00 00 00 00 00 00
				0c 00 03 00 | 00 02 00 00 00 00 00 00
				0c 00 04 00 | 02 00 00 00 00 00 00 00
				0c 00 05 00 | 00 00 00 00 00 00 00 00
				0c 00 06 00 | 00 00 00 00 00 00 00 00
				10 00 07 00 | 0c 00 01 00 | 08 00 01 00 | 2c 01 00 00
				0c 00 08 00 | 00 00 00 00 00 00 00 00`,
		},
		{
			name: "backend whose NUL ends on a 4-byte boundary still gets no extra padding",
			o:    Options{Index: 0, SizeBytes: 4096, Backend: "abc"},
			fd:   3,
			want: `
				08 00 01 00 | 00 00 00 00
				0c 00 02 00 | 00 10 00 00 00 00 00 00
				0c 00 03 00 | 00 10 00 00 00 00 00 00
				0c 00 04 00 | 00 00 00 00 00 00 00 00
				0c 00 05 00 | 00 00 00 00 00 00 00 00
				0c 00 06 00 | 00 00 00 00 00 00 00 00
				10 00 07 00 | 0c 00 01 00 | 08 00 01 00 | 03 00 00 00
				0c 00 08 00 | 00 00 00 00 00 00 00 00
				08 00 0a 00 | 61 62 63 00`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.validate(false); err != nil {
				t.Fatalf("validate: %v", err)
			}
			got := encodeConnect(tt.o, tt.fd)
			want := unhex(t, stripComments(tt.want))
			if hex.EncodeToString(got) != hex.EncodeToString(want) {
				t.Errorf("encodeConnect\n got %x\nwant %x", got, want)
			}
			if len(got)%4 != 0 {
				t.Errorf("payload length %d not 4-aligned", len(got))
			}
		})
	}
}

func TestEncodeReconfigure(t *testing.T) {
	skipBigEndian(t)
	tests := []struct {
		name string
		o    Options
		fd   int
		want string
	}{
		{
			name: "keep size: no SIZE/BLOCK_SIZE, never SERVER_FLAGS",
			o:    Options{Index: 2, Timeout: 30 * time.Second, DeadConnTimeout: time.Minute, ServerFlags: 0xd, Backend: "blkrep:r0"},
			fd:   9,
			want: `
				08 00 01 00 | 02 00 00 00
				0c 00 04 00 | 1e 00 00 00 00 00 00 00
				0c 00 06 00 | 00 00 00 00 00 00 00 00
				10 00 07 00 | 0c 00 01 00 | 08 00 01 00 | 09 00 00 00
				0c 00 08 00 | 3c 00 00 00 00 00 00 00
				0e 00 0a 00 | 62 6c 6b 72 65 70 3a 72 30 00 00 00`,
		},
		{
			name: "resize",
			o:    Options{Index: 1, SizeBytes: 1 << 30, BlockSize: 4096, Backend: "b"},
			fd:   4,
			want: `
				08 00 01 00 | 01 00 00 00
				0c 00 02 00 | 00 00 00 40 00 00 00 00
				0c 00 03 00 | 00 10 00 00 00 00 00 00
				0c 00 04 00 | 00 00 00 00 00 00 00 00
				0c 00 06 00 | 00 00 00 00 00 00 00 00
				10 00 07 00 | 0c 00 01 00 | 08 00 01 00 | 04 00 00 00
				0c 00 08 00 | 00 00 00 00 00 00 00 00
				06 00 0a 00 | 62 00 00 00`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.validate(true); err != nil {
				t.Fatalf("validate: %v", err)
			}
			got := encodeReconfigure(tt.o, tt.fd)
			want := unhex(t, stripComments(tt.want))
			if hex.EncodeToString(got) != hex.EncodeToString(want) {
				t.Errorf("encodeReconfigure\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestEncodeIndex(t *testing.T) {
	skipBigEndian(t)
	got := encodeIndex(0x1234)
	want := unhex(t, "08 00 01 00 | 34 12 00 00")
	if hex.EncodeToString(got) != hex.EncodeToString(want) {
		t.Errorf("got %x want %x", got, want)
	}
}

// stripComments keeps only the hex pairs of each line (up to the first
// token that is not a hex byte or "|").
func stripComments(s string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		for _, f := range strings.Fields(line) {
			if f == "|" {
				continue
			}
			if len(f) != 2 || strings.Trim(f, "0123456789abcdef") != "" {
				break
			}
			out = append(out, f)
		}
	}
	return strings.Join(out, "")
}

// Replies as the kernel builds them: genlmsghdr{cmd, version, 0}, then
// attributes; nests without NLA_F_NESTED (nla_nest_start_noflag).
const (
	statusTwoDevices = `05 01 00 00
		2c 00 09 00
		  14 00 01 00 | 08 00 01 00 | 00 00 00 00 | 05 00 02 00 | 01 00 00 00
		  14 00 01 00 | 08 00 01 00 | 07 00 00 00 | 05 00 02 00 | 00 00 00 00`
	statusEmpty   = `05 01 00 00 | 04 00 09 00`
	statusNested  = `05 01 00 00 | 18 00 09 80 | 14 00 01 80 | 08 00 01 00 | 03 00 00 00 | 05 00 02 00 | 01 00 00 00`
	connectReply  = `01 01 00 00 | 08 00 01 00 | 05 00 00 00`
	linkDeadReply = `04 01 00 00 | 08 00 01 00 | 0b 00 00 00`
)

func TestDecodeStatus(t *testing.T) {
	skipBigEndian(t)
	tests := []struct {
		name              string
		msg               string
		index             int
		exists, connected bool
		wantErr           error
	}{
		{"connected device", statusTwoDevices, 0, true, true, nil},
		{"unconfigured device", statusTwoDevices, 7, true, false, nil},
		{"absent device", statusTwoDevices, 1, false, false, nil},
		{"empty list", statusEmpty, 0, false, false, nil},
		{"NLA_F_NESTED set", statusNested, 3, true, true, nil},
		{"wrong command", connectReply, 5, false, false, ErrBadReply},
		{"short header", "05 01", 0, false, false, ErrBadReply},
		{"truncated attribute", "05 01 00 00 | 24 00 09 00 | 10 00", 0, false, false, ErrBadReply},
		{"attribute length below header", "05 01 00 00 | 02 00 09 00", 0, false, false, ErrBadReply},
		{"short index", "05 01 00 00 | 10 00 09 00 | 0c 00 01 00 | 06 00 01 00 | 00 00 00 00", 0, false, false, ErrBadReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			exists, connected, err := decodeStatus(unhex(t, tt.msg), tt.index)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if exists != tt.exists || connected != tt.connected {
				t.Errorf("exists, connected = %v, %v; want %v, %v", exists, connected, tt.exists, tt.connected)
			}
		})
	}
}

func TestDecodeIndexMsg(t *testing.T) {
	skipBigEndian(t)
	tests := []struct {
		name    string
		msg     string
		cmd     uint8
		want    int
		wantErr error
	}{
		{"connect reply", connectReply, cmdConnect, 5, nil},
		{"link dead", linkDeadReply, cmdLinkDead, 11, nil},
		{"command mismatch", linkDeadReply, cmdConnect, -1, ErrBadReply},
		{"no index", "01 01 00 00 | 0c 00 02 00 | 00 00 00 00 00 00 00 00", cmdConnect, -1, ErrBadReply},
		{"index out of range", "04 01 00 00 | 08 00 01 00 | ff ff ff ff", cmdLinkDead, -1, ErrBadReply},
		{"empty", "", cmdConnect, -1, ErrBadReply},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeIndexMsg(unhex(t, tt.msg), tt.cmd)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("index = %d, want %d", got, tt.want)
			}
		})
	}
}

func FuzzDecodeReply(f *testing.F) {
	for _, s := range []string{statusTwoDevices, statusEmpty, statusNested, connectReply, linkDeadReply} {
		f.Add(unhex(f, s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeStatus(b, 0)
		decodeIndexMsg(b, cmdConnect)
		decodeIndexMsg(b, cmdLinkDead)
	})
}

func TestValidate(t *testing.T) {
	ok := Options{Index: 0, SizeBytes: 1 << 20}
	tests := []struct {
		name        string
		mod         func(o *Options)
		reconfigure bool
		wantErr     bool
	}{
		{"defaults ok", func(o *Options) {}, false, false},
		{"kernel picks", func(o *Options) { o.Index = -1 }, false, false},
		{"index below -1", func(o *Options) { o.Index = -2 }, false, true},
		{"index too large", func(o *Options) { o.Index = MaxIndex + 1 }, false, true},
		{"reconfigure needs index", func(o *Options) { o.Index = -1 }, true, true},
		{"reconfigure keeps size", func(o *Options) { o.SizeBytes = 0 }, true, false},
		{"connect needs size", func(o *Options) { o.SizeBytes = 0 }, false, true},
		{"block size 512", func(o *Options) { o.BlockSize = 512 }, false, false},
		{"block size 256", func(o *Options) { o.BlockSize = 256 }, false, true},
		{"block size 8192", func(o *Options) { o.BlockSize = 8192 }, false, true},
		{"block size not power of two", func(o *Options) { o.BlockSize = 1536 }, false, true},
		{"size not multiple of block", func(o *Options) { o.SizeBytes = 4096 + 512 }, false, true},
		{"negative timeout", func(o *Options) { o.Timeout = -time.Second }, false, true},
		{"negative dead conn timeout", func(o *Options) { o.DeadConnTimeout = -1 }, false, true},
		{"FUA without FLUSH", func(o *Options) { o.ServerFlags = 1 | 8 }, false, true},
		{"FUA with FLUSH", func(o *Options) { o.ServerFlags = 1 | 4 | 8 }, false, false},
		{"backend with newline", func(o *Options) { o.Backend = "a\nb" }, false, true},
		{"backend with NUL", func(o *Options) { o.Backend = "a\x00b" }, false, true},
		{"backend too long", func(o *Options) { o.Backend = strings.Repeat("x", MaxBackendLen+1) }, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.mod(&o)
			err := o.validate(tt.reconfigure)
			if (err != nil) != tt.wantErr {
				t.Fatalf("validate = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrInvalidOptions) {
				t.Errorf("error %v does not wrap ErrInvalidOptions", err)
			}
		})
	}
}

func TestSeconds(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want uint64
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Second, 1},
		{time.Second + 1, 2}, {90 * time.Second, 90},
	} {
		if got := seconds(tt.d); got != tt.want {
			t.Errorf("seconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}
