package activelog

import (
	"errors"
	"math"
	"testing"
)

func TestExtentRange(t *testing.T) {
	const M = ExtentSize
	maxEnd := int64(MaxExtent+1) << ExtentShift
	tests := []struct {
		name     string
		off, len int64
		first    uint64
		n        int64
		err      error
	}{
		{"zero length at 0", 0, 0, 0, 0, nil},
		{"zero length mid-extent", 5*M + 7, 0, 5, 0, nil},
		{"one byte", 0, 1, 0, 1, nil},
		{"one block", 4096, 4096, 0, 1, nil},
		{"whole extent", M, M, 1, 1, nil},
		{"last byte of extent", M - 1, 1, 0, 1, nil},
		{"first byte of next", M, 1, 1, 1, nil},
		{"straddles boundary", M - 4096, 8192, 0, 2, nil},
		{"ends exactly on boundary", M - 4096, 4096, 0, 1, nil},
		{"two whole extents", 2 * M, 2 * M, 2, 2, nil},
		{"32 MiB unaligned", 4096, 32 << 20, 0, 9, nil},
		{"32 MiB aligned", 0, 32 << 20, 0, 8, nil},
		{"last addressable extent", maxEnd - M, M, MaxExtent, 1, nil},
		{"past last extent", maxEnd - M, M + 1, 0, 0, ErrRange},
		{"negative offset", -1, 10, 0, 0, ErrRange},
		{"negative length", 0, -1, 0, 0, ErrRange},
		{"overflow", math.MaxInt64 - 10, 100, 0, 0, ErrRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			first, n, err := ExtentRange(tc.off, tc.len)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err == nil && (first != tc.first || n != tc.n) {
				t.Fatalf("ExtentRange(%d, %d) = %d, %d; want %d, %d", tc.off, tc.len, first, n, tc.first, tc.n)
			}
		})
	}
}

func TestExtentOf(t *testing.T) {
	for _, tc := range []struct {
		off  int64
		want uint64
	}{{0, 0}, {ExtentSize - 1, 0}, {ExtentSize, 1}, {1 << 40, 1 << 18}} {
		if got := ExtentOf(tc.off); got != tc.want {
			t.Errorf("ExtentOf(%d) = %d, want %d", tc.off, got, tc.want)
		}
	}
}
