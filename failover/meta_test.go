package failover

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

// testMetas are the round-trip table's values; the fuzz target's seeds
// are their encodings.
func testMetas() []NodeMeta {
	ten := make([]VolumeMeta, 10)
	for i := range ten {
		ten[i] = VolumeMeta{Name: fmt.Sprintf("vol%02d", i), Role: Role(i % 2), Disk: Disk(i % 5),
			Term: uint64(i) * 1000, DataTerm: uint64(i) * 999, InSync: i%3 == 0}
	}
	return []NodeMeta{
		{},
		{Witness: true},
		{Leaving: true},
		{Witness: true, Leaving: true},
		{Volumes: []VolumeMeta{{Name: "r0", Role: RolePrimary, Disk: DiskUpToDate, Term: 7, DataTerm: 7, InSync: true}}},
		{Volumes: ten},
		{Leaving: true, Volumes: []VolumeMeta{
			{Name: "a", Term: math.MaxUint64, DataTerm: math.MaxUint64},
			{Name: "b", Disk: DiskInconsistent, Term: 1 << 63},
			{Name: strings.Repeat("z", MaxVolumeName), Disk: DiskConsistent, Term: 16384, DataTerm: 16383},
			{Name: "é日本", Disk: DiskOutdated, Term: 127, DataTerm: 127}, // sorts after ASCII, byte-wise
		}},
	}
}

func TestNodeMetaRoundTrip(t *testing.T) {
	for i, m := range testMetas() {
		b, err := EncodeNodeMeta(m)
		if err != nil {
			t.Fatalf("%d: encode %+v: %v", i, m, err)
		}
		got, err := DecodeNodeMeta(b)
		if err != nil {
			t.Fatalf("%d: decode %x: %v", i, b, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("%d: decoded %+v, want %+v", i, got, m)
		}
	}
}

// The layout, byte by byte, as docs/format/gossip.md shows it.
func TestNodeMetaLayout(t *testing.T) {
	m := NodeMeta{Witness: true, Volumes: []VolumeMeta{
		{Name: "r0", Role: RolePrimary, Disk: DiskUpToDate, Term: 300, DataTerm: 5, InSync: true},
		{Name: "r1", Disk: DiskOutdated},
	}}
	want := []byte{
		1, 0x01, 2, // version, flags (Witness), 2 volumes
		2, 'r', '0', 1, 4, 0x01, 0xac, 0x02, 0x05, // r0: Primary, UpToDate, InSync, term 300, data term 5
		2, 'r', '1', 0, 2, 0x00, 0x00, 0x00, // r1: Secondary, Outdated, terms 0
	}
	got, err := EncodeNodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded % x\nwant       % x", got, want)
	}
	if b, _ := EncodeNodeMeta(NodeMeta{}); !bytes.Equal(b, []byte{1, 0, 0}) {
		t.Fatalf("empty meta encodes as % x, want 01 00 00", b)
	}
}

// vol encodes one volume entry by hand.
func vol(name string, role, disk, flags byte, varints ...byte) []byte {
	b := append([]byte{byte(len(name))}, name...)
	b = append(b, role, disk, flags)
	return append(b, varints...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestDecodeNodeMetaRejects(t *testing.T) {
	ok := cat([]byte{1, 0, 2}, vol("a", 1, 4, 1, 5, 5), vol("b", 0, 0, 0, 0, 0))
	if _, err := DecodeNodeMeta(ok); err != nil {
		t.Fatalf("the table's base %x: %v", ok, err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"nil", nil, "empty"},
		{"empty", []byte{}, "empty"},
		{"version 0", []byte{0, 0, 0}, "version 0, want 1"},
		{"version 2", []byte{2, 0, 0}, "version 2, want 1"},
		{"no flags", []byte{1}, "truncated at byte 1: flags missing"},
		{"no count", []byte{1, 0}, "truncated at byte 2: volume count missing"},
		{"unknown node flag", []byte{1, 0x04, 0}, "flags 0x04: unknown bits 0x04"},
		{"unknown node flags with known", []byte{1, 0x83, 0}, "flags 0x83: unknown bits 0x80"},
		{"count above volumes", []byte{1, 0, 1}, "truncated at byte 3: volume 0 of 1 name length missing"},
		{"second volume missing", ok[:len(ok)-len(vol("b", 0, 0, 0, 0, 0))], "volume 1 of 2 name length missing"},
		{"name cut", cat([]byte{1, 0, 1}, []byte{3, 'a', 'b'}), "volume 0 of 1 name needs 3 bytes, 2 left"},
		{"no role", cat([]byte{1, 0, 1}, []byte{1, 'a'}), `volume "a" role missing`},
		{"no disk", cat([]byte{1, 0, 1}, []byte{1, 'a', 0}), `volume "a" disk missing`},
		{"no volume flags", cat([]byte{1, 0, 1}, []byte{1, 'a', 0, 0}), `volume "a" flags missing`},
		{"no term", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0)), `volume "a" term varint incomplete`},
		{"term cut", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 0x80)), `volume "a" term varint incomplete`},
		{"no data term", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 1)), `volume "a" data term varint incomplete`},
		{"trailing byte", append(append([]byte{}, ok...), 0), "1 trailing bytes after 2 volumes"},
		{"trailing bytes, no volumes", []byte{1, 0, 0, 9, 9}, "2 trailing bytes after 0 volumes"},
		{"name length 0", cat([]byte{1, 0, 1}, vol("", 0, 0, 0, 0, 0)), "volume 0 of 1 name: length 0, want 1 to 64"},
		{"name length 65", cat([]byte{1, 0, 1}, vol(strings.Repeat("n", 65), 0, 0, 0, 0, 0)), "name: length 65, want 1 to 64"},
		{"name not UTF-8", cat([]byte{1, 0, 1}, vol("a\xff", 0, 0, 0, 0, 0)), `"a\xff" is not valid UTF-8`},
		{"name with newline", cat([]byte{1, 0, 1}, vol("a\nb", 0, 0, 0, 0, 0)), `contains the control character U+000A`},
		{"name with DEL", cat([]byte{1, 0, 1}, vol("a\x7f", 0, 0, 0, 0, 0)), `control character U+007F`},
		{"name with C1 control", cat([]byte{1, 0, 1}, vol("a\u0085", 0, 0, 0, 0, 0)), `control character U+0085`},
		{"role 2", cat([]byte{1, 0, 1}, vol("a", 2, 0, 0, 0, 0)), `volume "a": role 2, want 0 (Secondary) or 1 (Primary)`},
		{"disk 5", cat([]byte{1, 0, 1}, vol("a", 0, 5, 0, 0, 0)), `volume "a": disk 5, want 0 (DUnknown) to 4 (UpToDate)`},
		{"disk 255", cat([]byte{1, 0, 1}, vol("a", 0, 255, 0, 0, 0)), `disk 255`},
		{"unknown volume flag", cat([]byte{1, 0, 1}, vol("a", 0, 0, 2, 0, 0)), `volume "a" flags 0x02: unknown bits 0x02`},
		{"data term above term", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 4, 5)), `volume "a": data term 5 is above term 4`},
		{"non-minimal term", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 0x85, 0x00, 0)), `volume "a" term varint at byte 8 is not minimal (2 bytes for 5)`},
		{"non-minimal zero data term", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 0, 0x80, 0x80, 0x00)), `data term varint at byte 9 is not minimal (3 bytes for 0)`},
		{"term over 64 bits", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0)),
			`volume "a" term varint at byte 8 overflows 64 bits`},
		{"term of 11 bytes", cat([]byte{1, 0, 1}, vol("a", 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0)),
			`overflows 64 bits`},
		{"unsorted", cat([]byte{1, 0, 2}, vol("b", 0, 0, 0, 0, 0), vol("a", 0, 0, 0, 0, 0)), `volume "a" after "b": names must be strictly sorted`},
		{"duplicate", cat([]byte{1, 0, 2}, vol("a", 0, 0, 0, 0, 0), vol("a", 0, 0, 0, 0, 0)), `volume "a" after "a": names must be strictly sorted`},
		{"prefix sorts first", cat([]byte{1, 0, 2}, vol("ab", 0, 0, 0, 0, 0), vol("a", 0, 0, 0, 0, 0)), `volume "a" after "ab"`},
		{"over the size limit", cat([]byte{1, 0, 0}, make([]byte, 510)), "node metadata is 513 bytes, memberlist allows 512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeNodeMeta(tc.b)
			if err == nil {
				t.Fatalf("decoded % x as %+v, want an error with %q", tc.b, m, tc.want)
			}
			if !errors.Is(err, ErrBadMeta) {
				t.Fatalf("error %v does not wrap ErrBadMeta", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
			if !reflect.DeepEqual(m, NodeMeta{}) {
				t.Fatalf("returned %+v with the error, want the zero NodeMeta", m)
			}
		})
	}
}

// Every value DecodeNodeMeta rejects, EncodeNodeMeta refuses to write.
func TestEncodeNodeMetaRejects(t *testing.T) {
	many := make([]VolumeMeta, 256)
	for i := range many {
		many[i].Name = fmt.Sprintf("v%03d", i)
	}
	for _, tc := range []struct {
		name string
		vols []VolumeMeta
		want string
	}{
		{"empty name", []VolumeMeta{{Name: ""}}, "volume 0 name: length 0, want 1 to 64"},
		{"long name", []VolumeMeta{{Name: "a"}, {Name: strings.Repeat("b", 65)}}, "volume 1 name: length 65, want 1 to 64"},
		{"bad UTF-8", []VolumeMeta{{Name: "\xc3"}}, `"\xc3" is not valid UTF-8`},
		{"control character", []VolumeMeta{{Name: "a\tb"}}, "control character U+0009"},
		{"unsorted", []VolumeMeta{{Name: "b"}, {Name: "a"}}, `volume "a" after "b": names must be strictly sorted`},
		{"duplicate", []VolumeMeta{{Name: "a"}, {Name: "a"}}, `volume "a" after "a"`},
		{"role", []VolumeMeta{{Name: "a", Role: 2}}, `volume "a": role 2, want 0 (Secondary) or 1 (Primary)`},
		{"disk", []VolumeMeta{{Name: "a", Disk: 5}}, `volume "a": disk 5`},
		{"data term", []VolumeMeta{{Name: "a", Term: 1, DataTerm: 2}}, `volume "a": data term 2 is above term 1`},
		{"256 volumes", many, "256 volumes, at most 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeNodeMeta(NodeMeta{Volumes: tc.vols})
			if err == nil {
				t.Fatalf("encoded % x, want an error with %q", b, tc.want)
			}
			if !errors.Is(err, ErrBadMeta) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want ErrBadMeta with %q", err, tc.want)
			}
		})
	}
}

// sizedMeta returns a NodeMeta whose encoding is exactly n bytes: as many
// volumes with 64-byte names as fit, the rest made up with longer terms.
func sizedMeta(t testing.TB, n int) NodeMeta {
	t.Helper()
	const entry = 1 + MaxVolumeName + 3 + 1 + 1 // both terms 0
	k := (n - 3) / entry
	extra := n - 3 - k*entry
	var m NodeMeta
	for i := range k {
		e := min(extra, 18) // each varint grows by up to 9 bytes
		extra -= e
		tb, db := 1+min(e, 9), 1+e-min(e, 9)
		m.Volumes = append(m.Volumes, VolumeMeta{
			Name: fmt.Sprintf("%03d", i) + strings.Repeat("x", MaxVolumeName-3),
			Term: termOfBytes(tb), DataTerm: termOfBytes(db),
		})
	}
	if extra != 0 {
		t.Fatalf("cannot build a meta of %d bytes (%d left over)", n, extra)
	}
	return m
}

// termOfBytes returns the smallest value whose uvarint takes k bytes.
func termOfBytes(k int) uint64 {
	if k <= 1 {
		return 0
	}
	return 1 << (7 * (k - 1))
}

func TestNodeMetaSizeLimit(t *testing.T) {
	for _, n := range []int{MaxMetaSize - 1, MaxMetaSize} {
		m := sizedMeta(t, n)
		b, err := EncodeNodeMeta(m)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if len(b) != n {
			t.Fatalf("built a meta of %d bytes, want %d", len(b), n)
		}
		if got, err := DecodeNodeMeta(b); err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("%d bytes: decoded %+v, %v", n, got, err)
		}
	}
	for _, n := range []int{MaxMetaSize + 1, 700} {
		m := sizedMeta(t, n)
		b, err := EncodeNodeMeta(m)
		want := fmt.Sprintf("node metadata is %d bytes, memberlist allows 512: too many volumes or names too long", n)
		if err == nil || !errors.Is(err, ErrBadMeta) || !strings.Contains(err.Error(), want) {
			t.Fatalf("%d bytes: encoded % x, %v; want an error with %q", n, b, err, want)
		}
	}
}
