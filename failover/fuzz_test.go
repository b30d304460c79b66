package failover

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeNodeMeta checks that DecodeNodeMeta never panics, fails only
// with ErrBadMeta, and accepts only canonical encodings: whatever it
// decodes, EncodeNodeMeta writes back as the same bytes. Seeds are the
// round-trip table's encodings, one at the size limit, and a few broken
// ones.
func FuzzDecodeNodeMeta(f *testing.F) {
	for _, m := range testMetas() {
		b, err := EncodeNodeMeta(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	b, err := EncodeNodeMeta(sizedMeta(f, MaxMetaSize))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	for _, b := range [][]byte{
		{},
		{2, 0, 0},
		{1, 0x04, 0},
		{1, 0, 1, 1, 'a', 0, 0, 0, 0x85, 0x00, 0},               // non-minimal term
		{1, 0, 2, 1, 'b', 0, 0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 0}, // unsorted
		{1, 0, 1, 1, 'a', 0, 0, 0, 4, 5},                        // data term above term
		{1, 0, 0, 0},                                            // trailing byte
	} {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeNodeMeta(b)
		if err != nil {
			if !errors.Is(err, ErrBadMeta) {
				t.Fatalf("error %v does not wrap ErrBadMeta", err)
			}
			return
		}
		re, err := EncodeNodeMeta(m)
		if err != nil {
			t.Fatalf("decoded % x as %+v, which does not encode: %v", b, m, err)
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("decoded % x as %+v, which encodes as % x", b, m, re)
		}
	})
}
