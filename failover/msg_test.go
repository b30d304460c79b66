package failover

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func sampleMsgs() []Msg {
	return []Msg{
		{Kind: MsgVote, Volume: "r0", Vote: VoteReq{Term: 7, Candidate: "beta", DataTerm: 6}},
		{Kind: MsgLease, Volume: "r0", Lease: LeaseReq{Term: 7, Primary: "beta", Seq: 300, Outdated: []string{"alpha", "gamma"}}},
		{Kind: MsgLease, Volume: "db", Lease: LeaseReq{Term: 1, Primary: "alpha", Seq: 1}},
		{Kind: MsgVoteAnswer, Volume: "r0", Vote: VoteReq{Term: 7, Candidate: "beta", DataTerm: 6},
			Answer: Answer{Granted: true, Term: 7, Primary: "alpha", PrimaryTerm: 6}},
		{Kind: MsgLeaseAnswer, Volume: "r0", Lease: LeaseReq{Term: 6, Primary: "alpha", Seq: 9},
			Answer: Answer{Term: 7, Reason: "term 6 is over: this voter is at term 7"}},
		{Kind: MsgRelease, Volume: "r0", Lease: LeaseReq{Term: 7, Primary: "alpha", Seq: 12}},
		{Kind: MsgHandover, Volume: "r0", Vote: VoteReq{Term: 7, Candidate: "beta", DataTerm: 7}},
		{Kind: MsgVoteAnswer, Volume: "r0", Vote: VoteReq{Term: 8, Candidate: "beta", DataTerm: 7},
			Answer: Answer{Term: 7, Primary: "alpha", PrimaryTerm: 7, Reason: "lease running", Retry: 1234}},
	}
}

func TestMsgRoundTrip(t *testing.T) {
	for _, m := range sampleMsgs() {
		b, err := EncodeMsg(m)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		got, err := DecodeMsg(b)
		if err != nil {
			t.Fatalf("%+v: decode: %v", m, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
	}
}

func TestMsgRejects(t *testing.T) {
	good, _ := EncodeMsg(sampleMsgs()[1])
	ans, _ := EncodeMsg(sampleMsgs()[3])
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated at magic"},
		{"magic", append([]byte("xx"), good[2:]...), "bad magic"},
		{"version", append([]byte{'b', 'f', 2}, good[3:]...), "version 2"},
		{"kind", append([]byte{'b', 'f', 1, 9}, good[4:]...), "unknown kind 9"},
		{"truncated", good[:len(good)-1], "truncated"},
		{"trailing", append(bytes.Clone(good), 0), "1 trailing bytes"},
		{"answer flags", func() []byte { b := bytes.Clone(ans); b[len(b)-12] = 2; return b }(), "unknown answer flags 0x2"},
		{"retry", func() []byte { b := bytes.Clone(ans); return binary.AppendUvarint(b[:len(b)-1], 3600*1000+1) }(), "answer's retry 3600001"},
	} {
		_, err := DecodeMsg(tc.b)
		if err == nil || !errors.Is(err, ErrBadMsg) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadMsg with %q", tc.name, err, tc.want)
		}
	}
	for _, m := range []Msg{
		{Kind: MsgVote, Volume: "", Vote: VoteReq{Term: 1, Candidate: "a"}},
		{Kind: MsgVote, Volume: "r0", Vote: VoteReq{Term: 1, Candidate: strings.Repeat("x", 65)}},
		{Kind: MsgLease, Volume: "r0", Lease: LeaseReq{Term: 1, Primary: "a", Outdated: []string{"c", "b"}}},
		{Kind: MsgLease, Volume: "r0", Lease: LeaseReq{Term: 1, Primary: "a\n"}},
		{Kind: 0, Volume: "r0"},
	} {
		if _, err := EncodeMsg(m); !errors.Is(err, ErrBadMsg) {
			t.Errorf("EncodeMsg(%+v) = %v, want ErrBadMsg", m, err)
		}
	}
}

func FuzzDecodeMsg(f *testing.F) {
	for _, m := range sampleMsgs() {
		b, _ := EncodeMsg(m)
		f.Add(b)
	}
	f.Add([]byte("bf\x01\x02\x02r0\x80\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMsg(b)
		if err != nil {
			if !errors.Is(err, ErrBadMsg) {
				t.Fatalf("error %v does not wrap ErrBadMsg", err)
			}
			return
		}
		e, err := EncodeMsg(m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if !bytes.Equal(e, b) {
			t.Fatalf("not canonical: %x decodes to %+v, which encodes to %x", b, m, e)
		}
	})
}
