package failover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
)

// The node metadata encoding (docs/format/gossip.md), version 1:
//
//	version  u8       1
//	flags    u8       bit 0 Witness, bit 1 Leaving; others 0
//	count    u8       number of volumes
//	count times, strictly sorted by name:
//	  name_len  u8       1 to MaxVolumeName
//	  name      [name_len] valid UTF-8 without control characters
//	  role      u8       0 Secondary, 1 Primary
//	  disk      u8       0 DUnknown ... 4 UpToDate
//	  vflags    u8       bit 0 InSync; others 0
//	  term      uvarint  shortest form
//	  data_term uvarint  shortest form, <= term
//
// The whole encoding is at most memberlist.MetaMaxSize bytes. Every value
// has exactly one encoding: DecodeNodeMeta accepts only what
// EncodeNodeMeta produces.

// MetaVersion is the node metadata encoding version this build writes
// and reads.
const MetaVersion = 1

// MaxVolumeName is the longest volume name the metadata carries, in bytes.
const MaxVolumeName = 64

// MaxMetaSize is the largest encoded NodeMeta: memberlist's limit on node
// metadata.
const MaxMetaSize = memberlist.MetaMaxSize

const (
	metaWitness = 1 << 0
	metaLeaving = 1 << 1
	metaKnown   = metaWitness | metaLeaving

	volInSync = 1 << 0
	volKnown  = volInSync
)

// ErrBadMeta is wrapped by every error about node metadata that does not
// follow the format: every DecodeNodeMeta error, and EncodeNodeMeta's
// errors for a NodeMeta it cannot encode.
var ErrBadMeta = errors.New("failover: malformed node metadata")

func badMeta(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadMeta, fmt.Sprintf(format, args...))
}

// checkName reports why s is not a valid volume (or node) name: 1 to
// MaxVolumeName bytes of valid UTF-8 without control characters.
func checkName(s string) error {
	if len(s) == 0 || len(s) > MaxVolumeName {
		return fmt.Errorf("length %d, want 1 to %d", len(s), MaxVolumeName)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q contains the control character %U", s, r)
		}
	}
	return nil
}

// checkVolume validates one volume's fields other than the name.
func checkVolume(v VolumeMeta) error {
	if v.Role > RolePrimary {
		return fmt.Errorf("role %d, want 0 (Secondary) or 1 (Primary)", v.Role)
	}
	if v.Disk > DiskUpToDate {
		return fmt.Errorf("disk %d, want 0 (DUnknown) to 4 (UpToDate)", v.Disk)
	}
	if v.DataTerm > v.Term {
		return fmt.Errorf("data term %d is above term %d", v.DataTerm, v.Term)
	}
	return nil
}

// EncodeNodeMeta returns the canonical encoding of m. It fails, with an
// error wrapping ErrBadMeta, for anything DecodeNodeMeta would reject:
// more than 255 volumes, volumes not strictly sorted by name, a bad name,
// role or disk, DataTerm above Term, or an encoding longer than
// MaxMetaSize.
func EncodeNodeMeta(m NodeMeta) ([]byte, error) {
	if len(m.Volumes) > 255 {
		return nil, badMeta("%d volumes, at most 255", len(m.Volumes))
	}
	b := make([]byte, 0, 64)
	var flags byte
	if m.Witness {
		flags |= metaWitness
	}
	if m.Leaving {
		flags |= metaLeaving
	}
	b = append(b, MetaVersion, flags, byte(len(m.Volumes)))
	for i, v := range m.Volumes {
		if err := checkName(v.Name); err != nil {
			return nil, badMeta("volume %d name: %v", i, err)
		}
		if i > 0 && m.Volumes[i-1].Name >= v.Name {
			return nil, badMeta("volume %q after %q: names must be strictly sorted (sorted and unique)",
				v.Name, m.Volumes[i-1].Name)
		}
		if err := checkVolume(v); err != nil {
			return nil, badMeta("volume %q: %v", v.Name, err)
		}
		var vf byte
		if v.InSync {
			vf |= volInSync
		}
		b = append(b, byte(len(v.Name)))
		b = append(b, v.Name...)
		b = append(b, byte(v.Role), byte(v.Disk), vf)
		b = binary.AppendUvarint(b, v.Term)
		b = binary.AppendUvarint(b, v.DataTerm)
	}
	if len(b) > MaxMetaSize {
		return nil, badMeta("node metadata is %d bytes, memberlist allows %d: too many volumes or names too long",
			len(b), MaxMetaSize)
	}
	return b, nil
}

// metaReader walks an encoding; off is the offset of the next byte.
type metaReader struct {
	b   []byte
	off int
}

func (r *metaReader) byte(what string) (byte, error) {
	if r.off >= len(r.b) {
		return 0, badMeta("truncated at byte %d: %s missing", r.off, what)
	}
	c := r.b[r.off]
	r.off++
	return c, nil
}

func (r *metaReader) bytes(n int, what string) ([]byte, error) {
	if len(r.b)-r.off < n {
		return nil, badMeta("truncated at byte %d: %s needs %d bytes, %d left", r.off, what, n, len(r.b)-r.off)
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s, nil
}

// uvarint reads a shortest-form unsigned varint.
func (r *metaReader) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(r.b[r.off:])
	switch {
	case n == 0:
		return 0, badMeta("truncated at byte %d: %s varint incomplete", r.off, what)
	case n < 0:
		return 0, badMeta("%s varint at byte %d overflows 64 bits", what, r.off)
	case n > 1 && r.b[r.off+n-1] == 0:
		// A last byte of 0 adds nothing: a shorter form exists.
		return 0, badMeta("%s varint at byte %d is not minimal (%d bytes for %d)", what, r.off, n, v)
	}
	r.off += n
	return v, nil
}

// DecodeNodeMeta decodes node metadata written by EncodeNodeMeta. Every
// error wraps ErrBadMeta and names the field and the value at fault.
// Nothing but the canonical encoding is accepted, so
// EncodeNodeMeta(DecodeNodeMeta(b)) == b for every b it accepts.
func DecodeNodeMeta(b []byte) (NodeMeta, error) {
	var m NodeMeta
	if len(b) == 0 {
		return m, badMeta("empty")
	}
	if len(b) > MaxMetaSize {
		return m, badMeta("node metadata is %d bytes, memberlist allows %d", len(b), MaxMetaSize)
	}
	if b[0] != MetaVersion {
		return m, badMeta("version %d, want %d", b[0], MetaVersion)
	}
	r := &metaReader{b: b, off: 1}
	flags, err := r.byte("flags")
	if err != nil {
		return m, err
	}
	if flags&^metaKnown != 0 {
		return m, badMeta("flags 0x%02x: unknown bits 0x%02x", flags, flags&^metaKnown)
	}
	m.Witness = flags&metaWitness != 0
	m.Leaving = flags&metaLeaving != 0
	count, err := r.byte("volume count")
	if err != nil {
		return m, err
	}
	if count > 0 {
		m.Volumes = make([]VolumeMeta, 0, count)
	}
	for i := range int(count) {
		what := fmt.Sprintf("volume %d of %d", i, count)
		n, err := r.byte(what + " name length")
		if err != nil {
			return NodeMeta{}, err
		}
		if n == 0 || n > MaxVolumeName {
			return NodeMeta{}, badMeta("%s name: length %d, want 1 to %d", what, n, MaxVolumeName)
		}
		name, err := r.bytes(int(n), what+" name")
		if err != nil {
			return NodeMeta{}, err
		}
		v := VolumeMeta{Name: string(name)}
		if err := checkName(v.Name); err != nil {
			return NodeMeta{}, badMeta("%s name: %v", what, err)
		}
		if i > 0 && m.Volumes[i-1].Name >= v.Name {
			return NodeMeta{}, badMeta("volume %q after %q: names must be strictly sorted (sorted and unique)",
				v.Name, m.Volumes[i-1].Name)
		}
		what = fmt.Sprintf("volume %q", v.Name)
		role, err := r.byte(what + " role")
		if err != nil {
			return NodeMeta{}, err
		}
		disk, err := r.byte(what + " disk")
		if err != nil {
			return NodeMeta{}, err
		}
		vf, err := r.byte(what + " flags")
		if err != nil {
			return NodeMeta{}, err
		}
		if vf&^volKnown != 0 {
			return NodeMeta{}, badMeta("%s flags 0x%02x: unknown bits 0x%02x", what, vf, vf&^volKnown)
		}
		v.Role, v.Disk, v.InSync = Role(role), Disk(disk), vf&volInSync != 0
		if v.Term, err = r.uvarint(what + " term"); err != nil {
			return NodeMeta{}, err
		}
		if v.DataTerm, err = r.uvarint(what + " data term"); err != nil {
			return NodeMeta{}, err
		}
		if err := checkVolume(v); err != nil {
			return NodeMeta{}, badMeta("%s: %v", what, err)
		}
		m.Volumes = append(m.Volumes, v)
	}
	if r.off != len(b) {
		return NodeMeta{}, badMeta("%d trailing bytes after %d volumes", len(b)-r.off, count)
	}
	return m, nil
}
