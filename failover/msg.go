package failover

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// MsgKind is the kind of a failover message between nodes.
type MsgKind uint8

const (
	MsgVote        MsgKind = 1 // a candidate asks for a vote (Msg.Vote)
	MsgLease       MsgKind = 2 // a primary asks for a lease (Msg.Lease)
	MsgVoteAnswer  MsgKind = 3 // a voter answers Msg.Vote with Msg.Answer
	MsgLeaseAnswer MsgKind = 4 // a voter answers Msg.Lease with Msg.Answer
	// MsgRelease: a primary that stepped down for a planned switchover
	// ends the lease it holds (Msg.Lease: its term and name); no answer.
	MsgRelease MsgKind = 5
	// MsgHandover: that primary asks the node it hands over to to start an
	// election now (Msg.Vote: Term is the old primary's term, Candidate the
	// node asked, DataTerm the old term too); no answer.
	MsgHandover MsgKind = 6
)

func (k MsgKind) String() string {
	switch k {
	case MsgVote:
		return "vote"
	case MsgLease:
		return "lease"
	case MsgVoteAnswer:
		return "vote-answer"
	case MsgLeaseAnswer:
		return "lease-answer"
	case MsgRelease:
		return "release"
	case MsgHandover:
		return "handover"
	}
	return fmt.Sprintf("MsgKind(%d)", uint8(k))
}

// Msg is one failover message, carried as a gossip user message
// (Gossip.Send). Answers repeat the request they answer (a lease answer
// without its Outdated list) so the asker needs no table of requests.
type Msg struct {
	Kind   MsgKind
	Volume string
	Vote   VoteReq  // MsgVote, MsgVoteAnswer, MsgHandover
	Lease  LeaseReq // MsgLease, MsgLeaseAnswer, MsgRelease
	Answer Answer   // MsgVoteAnswer, MsgLeaseAnswer
}

// ErrBadMsg is wrapped by every error decoding a failover message.
var ErrBadMsg = errors.New("failover: malformed message")

const (
	msgVersion     = 1
	msgMaxReason   = 1024
	msgMaxRetry    = 3600 * 1000 // an hour of milliseconds
	msgMaxOutdated = 32
	msgMagic0      = 'b'
	msgMagic1      = 'f'
	answerFlagOK   = 1
)

type msgEnc struct {
	b   []byte
	err error
}

func (e *msgEnc) u8(v uint8)  { e.b = append(e.b, v) }
func (e *msgEnc) uv(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *msgEnc) name(s string, what string, empty bool) {
	if e.err == nil {
		e.err = checkMsgName(s, what, empty)
	}
	e.b = append(e.b, byte(len(s)))
	e.b = append(e.b, s...)
}

// checkMsgName checks a name in a message with the rule node and volume
// names follow everywhere in failover (checkName); empty allows "".
func checkMsgName(s, what string, empty bool) error {
	if s == "" && empty {
		return nil
	}
	if err := checkName(s); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadMsg, what, err)
	}
	return nil
}

// EncodeMsg encodes m (docs/format/gossip.md, "Failover messages").
func EncodeMsg(m Msg) ([]byte, error) {
	e := &msgEnc{b: make([]byte, 0, 64)}
	e.u8(msgMagic0)
	e.u8(msgMagic1)
	e.u8(msgVersion)
	e.u8(uint8(m.Kind))
	e.name(m.Volume, "volume", false)
	switch m.Kind {
	case MsgVote, MsgVoteAnswer, MsgHandover:
		e.uv(m.Vote.Term)
		e.name(m.Vote.Candidate, "candidate", false)
		e.uv(m.Vote.DataTerm)
	case MsgLease, MsgLeaseAnswer, MsgRelease:
		e.uv(m.Lease.Term)
		e.name(m.Lease.Primary, "primary", false)
		e.uv(m.Lease.Seq)
		if m.Kind == MsgLease {
			if len(m.Lease.Outdated) > msgMaxOutdated {
				return nil, fmt.Errorf("%w: %d outdated nodes, at most %d", ErrBadMsg, len(m.Lease.Outdated), msgMaxOutdated)
			}
			if !slices.IsSorted(m.Lease.Outdated) || len(slices.Compact(slices.Clone(m.Lease.Outdated))) != len(m.Lease.Outdated) {
				return nil, fmt.Errorf("%w: outdated list %q is not sorted and unique", ErrBadMsg, m.Lease.Outdated)
			}
			e.u8(uint8(len(m.Lease.Outdated)))
			for _, o := range m.Lease.Outdated {
				e.name(o, "outdated node", false)
			}
		}
	default:
		return nil, fmt.Errorf("%w: unknown kind %d", ErrBadMsg, m.Kind)
	}
	if m.Kind == MsgVoteAnswer || m.Kind == MsgLeaseAnswer {
		a := m.Answer
		var f uint8
		if a.Granted {
			f = answerFlagOK
		}
		e.u8(f)
		e.uv(a.Term)
		e.name(a.Primary, "answer's primary", true)
		e.uv(a.PrimaryTerm)
		if len(a.Reason) > msgMaxReason || !utf8.ValidString(a.Reason) {
			return nil, fmt.Errorf("%w: answer's reason must be UTF-8 of at most %d bytes", ErrBadMsg, msgMaxReason)
		}
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(len(a.Reason)))
		e.b = append(e.b, a.Reason...)
		if a.Retry < 0 || a.Retry > msgMaxRetry {
			return nil, fmt.Errorf("%w: answer's retry %d outside 0..%d", ErrBadMsg, a.Retry, msgMaxRetry)
		}
		e.uv(uint64(a.Retry))
	}
	if e.err != nil {
		return nil, e.err
	}
	return e.b, nil
}

type msgDec struct {
	b   []byte
	err error
}

func (d *msgDec) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrBadMsg}, args...)...)
	}
}

func (d *msgDec) u8(what string) uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated at %s", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *msgDec) uv(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or overlong varint at %s", what)
		return 0
	}
	if n != len(binary.AppendUvarint(nil, v)) {
		d.fail("non-minimal varint at %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *msgDec) name(what string, empty bool) string {
	n := int(d.u8(what + " length"))
	if d.err != nil {
		return ""
	}
	if len(d.b) < n {
		d.fail("truncated in %s", what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	if err := checkMsgName(s, what, empty); err != nil && d.err == nil {
		d.err = err
	}
	return s
}

// DecodeMsg decodes a failover message, refusing anything EncodeMsg would
// not produce.
func DecodeMsg(b []byte) (Msg, error) {
	d := &msgDec{b: b}
	var m Msg
	if d.u8("magic") != msgMagic0 || d.u8("magic") != msgMagic1 {
		d.fail("not a failover message (bad magic)")
	}
	if v := d.u8("version"); d.err == nil && v != msgVersion {
		d.fail("version %d, this blkrepd speaks version %d", v, msgVersion)
	}
	m.Kind = MsgKind(d.u8("kind"))
	m.Volume = d.name("volume", false)
	switch m.Kind {
	case MsgVote, MsgVoteAnswer, MsgHandover:
		m.Vote.Term = d.uv("term")
		m.Vote.Candidate = d.name("candidate", false)
		m.Vote.DataTerm = d.uv("data term")
	case MsgLease, MsgLeaseAnswer, MsgRelease:
		m.Lease.Term = d.uv("term")
		m.Lease.Primary = d.name("primary", false)
		m.Lease.Seq = d.uv("seq")
		if m.Kind == MsgLease {
			n := int(d.u8("outdated count"))
			if n > msgMaxOutdated {
				d.fail("%d outdated nodes, at most %d", n, msgMaxOutdated)
			}
			for i := 0; i < n && d.err == nil; i++ {
				o := d.name("outdated node", false)
				if i > 0 && o <= m.Lease.Outdated[i-1] {
					d.fail("outdated list is not sorted and unique")
				}
				m.Lease.Outdated = append(m.Lease.Outdated, o)
			}
		}
	default:
		if d.err == nil {
			d.fail("unknown kind %d", m.Kind)
		}
	}
	if m.Kind == MsgVoteAnswer || m.Kind == MsgLeaseAnswer {
		switch f := d.u8("answer flags"); {
		case f == answerFlagOK:
			m.Answer.Granted = true
		case f != 0 && d.err == nil:
			d.fail("unknown answer flags %#x", f)
		}
		m.Answer.Term = d.uv("answer's term")
		m.Answer.Primary = d.name("answer's primary", true)
		m.Answer.PrimaryTerm = d.uv("answer's primary term")
		if d.err == nil {
			if len(d.b) < 2 {
				d.fail("truncated at the reason's length")
			} else {
				n := int(binary.BigEndian.Uint16(d.b))
				d.b = d.b[2:]
				switch {
				case n > msgMaxReason:
					d.fail("reason of %d bytes, at most %d", n, msgMaxReason)
				case len(d.b) < n:
					d.fail("truncated in the reason")
				case !utf8.Valid(d.b[:n]):
					d.fail("reason is not UTF-8")
				default:
					m.Answer.Reason = string(d.b[:n])
					d.b = d.b[n:]
				}
			}
		}
		if r := d.uv("answer's retry"); d.err == nil && r > msgMaxRetry {
			d.fail("answer's retry %d, at most %d", r, msgMaxRetry)
		} else {
			m.Answer.Retry = int64(r)
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Msg{}, d.err
	}
	return m, nil
}
