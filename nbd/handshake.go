package nbd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"
)

// negotiated is what the handshake agreed on.
type negotiated struct {
	exp         *export
	structured  bool
	strictAlign bool // the client asked for block size constraints
	metaAlloc   bool // base:allocation selected
	noZeroes    bool
	br          *bufio.Reader // reader already holding buffered bytes, or nil
}

var (
	errAborted = errors.New("nbd: client aborted the handshake")
	// errProtocol marks a handshake violation that ends the session.
	errProtocol = errors.New("nbd: protocol violation")
)

// handshake carries the per-client negotiation state.
type handshake struct {
	s             *Server
	nc            net.Conn
	br            *bufio.Reader
	bw            *bufio.Writer
	log           *slog.Logger
	defaultExport string

	structured   bool
	metaAlloc    bool
	metaExport   string // the export the meta context was selected for
	noZeroes     bool
	clientFlags  uint32
	optionsCount int
}

// maxOptions bounds the number of options in one handshake.
const maxOptions = 1024

func (s *Server) negotiate(nc net.Conn, defaultExport string, log *slog.Logger) (*negotiated, error) {
	if s.HandshakeTimeout > 0 {
		nc.SetDeadline(time.Now().Add(s.HandshakeTimeout))
	}
	if s.closing() {
		// Shutdown may have expired the deadline just before we set it.
		return nil, ErrServerClosed
	}
	h := &handshake{
		s: s, nc: nc, log: log, defaultExport: defaultExport,
		br: bufio.NewReaderSize(nc, 64<<10),
		bw: bufio.NewWriterSize(nc, 4<<10),
	}
	neg, err := h.run()
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	neg.br = h.br
	return neg, nil
}

func (h *handshake) run() (*negotiated, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:8], magicNBD)
	binary.BigEndian.PutUint64(hello[8:16], magicIHaveOpt)
	binary.BigEndian.PutUint16(hello[16:18], flagFixedNewstyle|flagNoZeroes)
	if _, err := h.nc.Write(hello[:]); err != nil {
		return nil, err
	}
	var cf [4]byte
	if _, err := io.ReadFull(h.br, cf[:]); err != nil {
		return nil, fmt.Errorf("reading client flags: %w", err)
	}
	h.clientFlags = binary.BigEndian.Uint32(cf[:])
	if h.clientFlags&^(clientFixedNewstyle|clientNoZeroes) != 0 {
		return nil, fmt.Errorf("%w: unknown client flags %#x", errProtocol, h.clientFlags)
	}
	if h.clientFlags&clientFixedNewstyle == 0 {
		return nil, fmt.Errorf("%w: client does not speak fixed newstyle", errProtocol)
	}
	h.noZeroes = h.clientFlags&clientNoZeroes != 0

	var hdr [16]byte
	for {
		if _, err := io.ReadFull(h.br, hdr[:]); err != nil {
			return nil, fmt.Errorf("reading option: %w", err)
		}
		if binary.BigEndian.Uint64(hdr[0:8]) != magicIHaveOpt {
			return nil, fmt.Errorf("%w: bad option magic", errProtocol)
		}
		h.optionsCount++
		if h.optionsCount > maxOptions {
			return nil, fmt.Errorf("%w: more than %d options", errProtocol, maxOptions)
		}
		opt := binary.BigEndian.Uint32(hdr[8:12])
		length := binary.BigEndian.Uint32(hdr[12:16])
		if length > maxOptionLen {
			// Too big to be a legitimate option: drain it (bounded by the
			// handshake deadline) and refuse, keeping the session usable.
			if _, err := io.CopyN(io.Discard, h.br, int64(length)); err != nil {
				return nil, fmt.Errorf("discarding oversized option: %w", err)
			}
			if err := h.replyErr(opt, repErrTooBig, "option data too large"); err != nil {
				return nil, err
			}
			continue
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(h.br, data); err != nil {
			return nil, fmt.Errorf("reading option data: %w", err)
		}
		neg, err := h.option(opt, data)
		if err != nil || neg != nil {
			return neg, err
		}
	}
}

// option handles one option; a non-nil negotiated ends the handshake.
func (h *handshake) option(opt uint32, data []byte) (*negotiated, error) {
	switch opt {
	case optExportName:
		return h.exportName(data)
	case optAbort:
		h.reply(opt, repAck, nil) // best effort: the client may be gone
		return nil, errAborted
	case optList:
		if len(data) != 0 {
			return nil, h.replyErr(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
		}
		for _, e := range h.s.exportNames() {
			b := binary.BigEndian.AppendUint32(nil, uint32(len(e.Name)))
			b = append(b, e.Name...)
			b = append(b, e.Description...)
			if err := h.reply(opt, repServer, b); err != nil {
				return nil, err
			}
		}
		return nil, h.reply(opt, repAck, nil)
	case optInfo, optGo:
		return h.infoGo(opt, data)
	case optStructuredReply:
		if len(data) != 0 {
			return nil, h.replyErr(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
		}
		h.structured = true
		return nil, h.reply(opt, repAck, nil)
	case optListMetaContext, optSetMetaContext:
		return nil, h.metaContext(opt, data)
	case optStartTLS:
		return nil, h.replyErr(opt, repErrUnsup, "TLS is not supported by this server")
	default:
		return nil, h.replyErr(opt, repErrUnsup, fmt.Sprintf("option %d not supported", opt))
	}
}

func (h *handshake) resolve(name string) string {
	if name == "" {
		return h.defaultExport
	}
	return name
}

func (h *handshake) exportName(data []byte) (*negotiated, error) {
	name := h.resolve(string(data))
	e := h.s.lookup(name)
	if e == nil {
		// EXPORT_NAME has no way to report an error: the spec says close.
		return nil, fmt.Errorf("client asked for unknown export %q", name)
	}
	if e.Admit != nil {
		if err := e.Admit(); err != nil {
			return nil, fmt.Errorf("export %q refused: %w", name, err)
		}
	}
	b := make([]byte, 10, 10+124)
	binary.BigEndian.PutUint64(b[0:8], uint64(e.Size))
	binary.BigEndian.PutUint16(b[8:10], e.flags(h.structured))
	if !h.noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	if _, err := h.bw.Write(b); err != nil {
		return nil, err
	}
	if err := h.bw.Flush(); err != nil {
		return nil, err
	}
	return h.done(e, false), nil
}

func (h *handshake) done(e *export, strictAlign bool) *negotiated {
	return &negotiated{
		exp:         e,
		structured:  h.structured,
		strictAlign: strictAlign,
		metaAlloc:   h.structured && h.metaAlloc && h.metaExport == e.Name,
		noZeroes:    h.noZeroes,
	}
}

func (h *handshake) infoGo(opt uint32, data []byte) (*negotiated, error) {
	if len(data) < 6 {
		return nil, h.replyErr(opt, repErrInvalid, "option data too short")
	}
	nameLen := binary.BigEndian.Uint32(data[0:4])
	if nameLen > maxStringLen || uint64(nameLen)+6 > uint64(len(data)) {
		return nil, h.replyErr(opt, repErrInvalid, "export name length out of range")
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	n := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*n {
		return nil, h.replyErr(opt, repErrInvalid, "information request count does not match option length")
	}
	var wantName, wantDesc, wantBlock bool
	for i := 0; i < n; i++ {
		switch binary.BigEndian.Uint16(rest[2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		case infoBlockSize:
			wantBlock = true
		}
	}
	resolved := h.resolve(name)
	e := h.s.lookup(resolved)
	if e == nil {
		return nil, h.replyErr(opt, repErrUnknown, fmt.Sprintf("unknown export %q", resolved))
	}
	if e.Admit != nil {
		if err := e.Admit(); err != nil {
			return nil, h.replyErr(opt, repErrPolicy, err.Error())
		}
	}
	b := binary.BigEndian.AppendUint16(nil, infoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Size))
	b = binary.BigEndian.AppendUint16(b, e.flags(h.structured))
	if err := h.reply(opt, repInfo, b); err != nil {
		return nil, err
	}
	if wantName {
		b = binary.BigEndian.AppendUint16(b[:0], infoName)
		b = append(b, e.Name...)
		if err := h.reply(opt, repInfo, b); err != nil {
			return nil, err
		}
	}
	if wantDesc && e.Description != "" {
		b = binary.BigEndian.AppendUint16(b[:0], infoDescription)
		b = append(b, e.Description...)
		if err := h.reply(opt, repInfo, b); err != nil {
			return nil, err
		}
	}
	// Block sizes are sent even when not requested (the spec allows it),
	// but only enforced against clients that asked for them.
	b = binary.BigEndian.AppendUint16(b[:0], infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, MinBlockSize)
	b = binary.BigEndian.AppendUint32(b, e.blockSize())
	b = binary.BigEndian.AppendUint32(b, MaxPayload)
	if err := h.reply(opt, repInfo, b); err != nil {
		return nil, err
	}
	if err := h.reply(opt, repAck, nil); err != nil {
		return nil, err
	}
	if opt == optGo {
		return h.done(e, wantBlock), nil
	}
	return nil, nil
}

// metaContext serves LIST_META_CONTEXT and SET_META_CONTEXT. The only
// context is base:allocation.
func (h *handshake) metaContext(opt uint32, data []byte) error {
	if opt == optSetMetaContext && !h.structured {
		return h.replyErr(opt, repErrInvalid, "SET_META_CONTEXT requires structured replies")
	}
	p := data
	take := func(n int) ([]byte, bool) {
		if n < 0 || len(p) < n {
			return nil, false
		}
		v := p[:n]
		p = p[n:]
		return v, true
	}
	lb, ok := take(4)
	if !ok {
		return h.replyErr(opt, repErrInvalid, "option data too short")
	}
	nameLen := binary.BigEndian.Uint32(lb)
	if nameLen > maxStringLen {
		return h.replyErr(opt, repErrInvalid, "export name too long")
	}
	nb, ok := take(int(nameLen))
	if !ok {
		return h.replyErr(opt, repErrInvalid, "export name length out of range")
	}
	cb, ok := take(4)
	if !ok {
		return h.replyErr(opt, repErrInvalid, "missing query count")
	}
	count := binary.BigEndian.Uint32(cb)
	if uint64(count)*4 > uint64(len(p)) {
		return h.replyErr(opt, repErrInvalid, "query count exceeds option length")
	}
	queries := make([]string, 0, count)
	for i := uint32(0); i < count; i++ {
		qb, ok := take(4)
		if !ok {
			return h.replyErr(opt, repErrInvalid, "truncated query")
		}
		ql := binary.BigEndian.Uint32(qb)
		if ql > maxStringLen {
			return h.replyErr(opt, repErrInvalid, "query too long")
		}
		q, ok := take(int(ql))
		if !ok {
			return h.replyErr(opt, repErrInvalid, "query length out of range")
		}
		queries = append(queries, string(q))
	}
	if len(p) != 0 {
		return h.replyErr(opt, repErrInvalid, "trailing data after queries")
	}
	name := h.resolve(string(nb))
	if h.s.lookup(name) == nil {
		return h.replyErr(opt, repErrUnknown, fmt.Sprintf("unknown export %q", name))
	}
	match := false
	if opt == optListMetaContext && count == 0 {
		match = true
	}
	for _, q := range queries {
		if q == metaContextAllocation || (opt == optListMetaContext && q == "base:") {
			match = true
		}
	}
	if opt == optSetMetaContext {
		h.metaAlloc = match
		h.metaExport = name
	}
	if match {
		b := binary.BigEndian.AppendUint32(nil, metaContextAllocationID)
		b = append(b, metaContextAllocation...)
		if err := h.reply(opt, repMetaContext, b); err != nil {
			return err
		}
	}
	return h.reply(opt, repAck, nil)
}

func (h *handshake) reply(opt, typ uint32, data []byte) error {
	var hdr [20]byte
	binary.BigEndian.PutUint64(hdr[0:8], magicOptReply)
	binary.BigEndian.PutUint32(hdr[8:12], opt)
	binary.BigEndian.PutUint32(hdr[12:16], typ)
	binary.BigEndian.PutUint32(hdr[16:20], uint32(len(data)))
	h.bw.Write(hdr[:])
	h.bw.Write(data)
	return h.bw.Flush()
}

// replyErr sends an error reply with a message; the session continues.
func (h *handshake) replyErr(opt, typ uint32, msg string) error {
	h.log.Debug("nbd option refused", "option", opt, "reply", typ, "msg", msg)
	return h.reply(opt, typ, []byte(msg))
}
