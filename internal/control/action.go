package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Handler is what the daemon gives the control server.
type Handler interface {
	// Status returns the status document (schema SchemaStatus).
	Status() Status
	// Do runs an operator action on a volume. A refusal is an
	// *ActionError; any other error is answered 500. The server calls Do
	// only with a request that passed Validate and names a volume Status
	// lists. ctx ends when the client goes away: an action that has
	// started should still complete (or leave a consistent state), since
	// the operator may retry.
	Do(ctx context.Context, req Request) (Reply, error)
	// Subscribe returns a channel of events and a cancel func. The channel is
	// closed after cancel or when the daemon stops. Slow readers may miss events
	// (the daemon drops, never blocks); Event.Seq lets them notice gaps.
	// Bus implements it.
	Subscribe() (<-chan Event, func())
}

// Operator actions, the last element of POST /v1/volumes/{volume}/{action}.
// Frozen: they are part of the control API.
const (
	ActionPrimary    = "primary"    // become Primary (Force: even without known UpToDate data)
	ActionSecondary  = "secondary"  // become Secondary
	ActionConnect    = "connect"    // leave StandAlone: connect to the peers
	ActionDisconnect = "disconnect" // drop the peer connections, go StandAlone
	ActionResync     = "resync"     // resync out-of-sync blocks (Full: all; DiscardMyData: end a split brain)
	ActionInvalidate = "invalidate" // discard this node's data, fetch all of it from a peer
	ActionVerify     = "verify"     // online verify: compare with the peer, mark differences out of sync
	ActionFailover   = "failover"   // planned switchover: this node, the primary, hands over (To: to whom)
)

var actions = []string{ActionPrimary, ActionSecondary, ActionConnect, ActionDisconnect, ActionResync, ActionInvalidate, ActionVerify, ActionFailover}

// Request is an operator action. On the wire the volume and action are
// the URL's; the JSON body carries the flags (and may repeat them).
type Request struct {
	Volume string `json:"volume"`
	Action string `json:"action"` // primary, secondary, connect, disconnect, resync, invalidate, verify
	// Force promotes although this node's data is not known to be the
	// newest (primary --force).
	Force bool `json:"force,omitempty"`
	// Full resyncs every block, not only those marked out of sync
	// (resync --full).
	Full bool `json:"full,omitempty"`
	// DiscardMyData ends a split brain by dropping this node's changes:
	// it becomes the sync target (resync --discard-my-data).
	DiscardMyData bool `json:"discard_my_data,omitempty"`
	// To names the node a planned switchover hands over to (failover
	// --to; "" lets the primary pick a node in sync with it).
	To string `json:"to,omitempty"`
}

// Validate checks the action name and that its flags apply to it. The
// error is an *ActionError with Code 400.
func (r Request) Validate() error {
	known := false
	for _, a := range actions {
		known = known || r.Action == a
	}
	switch {
	case !known:
		return badRequest("unknown action %q (actions: %s)", r.Action, strings.Join(actions, ", "))
	case r.Volume == "":
		return badRequest("no volume named")
	case r.Force && r.Action != ActionPrimary:
		return badRequest("force applies only to primary, not %s", r.Action)
	case (r.Full || r.DiscardMyData) && r.Action != ActionResync:
		return badRequest("full and discard_my_data apply only to resync, not %s", r.Action)
	case r.To != "" && r.Action != ActionFailover:
		return badRequest("to applies only to failover, not %s", r.Action)
	case r.Full && r.DiscardMyData:
		return badRequest("full and discard_my_data exclude each other (discard_my_data already resyncs what the split brain touched)")
	}
	return nil
}

// Reply is the answer to a successful action.
type Reply struct {
	// Message says what happened, for the operator ("r0 is now Primary",
	// "resync of r0 with beta started: 12.0 MiB out of sync").
	Message string `json:"message"`
}

// ActionError is a refusal: Code is an HTTP status (409 conflict for "peer is primary",
// 404 unknown volume, 400 bad request, 503 not possible now...), Message says why and what to do.
type ActionError struct {
	Code    int
	Message string
}

func (e *ActionError) Error() string { return e.Message }

func badRequest(format string, args ...any) *ActionError {
	return &ActionError{Code: http.StatusBadRequest, Message: fmt.Sprintf(format, args...)}
}

// maxRequestBytes bounds the action body.
const maxRequestBytes = 64 << 10

// decodeRequest reads the optional JSON body of an action. Unknown fields
// are refused: an older daemon must not silently ignore a flag (force!)
// that a newer CLI sends.
func decodeRequest(body io.Reader, volume, action string) (Request, error) {
	req := Request{Volume: volume, Action: action}
	var in Request
	dec := json.NewDecoder(io.LimitReader(body, maxRequestBytes+1))
	dec.DisallowUnknownFields()
	switch err := dec.Decode(&in); {
	case errors.Is(err, io.EOF):
		return req, req.Validate() // no body: no flags
	case err != nil:
		return req, badRequest("bad request body: %v", err)
	}
	if dec.InputOffset() > maxRequestBytes {
		return req, badRequest("request body longer than %d bytes", maxRequestBytes)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return req, badRequest("bad request body: more than one JSON value")
	}
	if in.Volume != "" && in.Volume != volume || in.Action != "" && in.Action != action {
		return req, badRequest("body names %s %q, the URL %s %q", in.Action, in.Volume, action, volume)
	}
	req.Force, req.Full, req.DiscardMyData = in.Force, in.Full, in.DiscardMyData
	return req, req.Validate()
}
