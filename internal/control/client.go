package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// Client talks to a daemon's control socket.
type Client struct {
	path string
	hc   *http.Client // status: bounded by a timeout
	// stream has no timeout: actions and events end with their context.
	stream *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{path: path, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}, stream: &http.Client{Transport: tr}}
}

// ErrNotRunning means nothing listens on the control socket.
var ErrNotRunning = errors.New("control: blkrepd is not running")

// Status fetches GET /v1/status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.get(ctx, "/v1/status", &st); err != nil {
		return nil, err
	}
	if st.Schema != SchemaStatus {
		return nil, fmt.Errorf("control: daemon speaks status schema %q, this CLI knows %q", st.Schema, SchemaStatus)
	}
	return &st, nil
}

// Do runs an operator action: POST /v1/volumes/{volume}/{action} with the
// flags in the body. A refusal (any non-200 answer, with the daemon's
// message) is an *ActionError; so is a request that fails Validate, with
// Code 400, without asking the daemon. Other errors are transport errors
// (ErrNotRunning...): then, or when ctx ends, the action may or may not
// have been done.
func (c *Client) Do(ctx context.Context, r Request) (Reply, error) {
	if err := r.Validate(); err != nil {
		return Reply{}, err
	}
	body, err := json.Marshal(r)
	if err != nil {
		return Reply{}, err
	}
	u := "http://blkrepd/v1/volumes/" + url.PathEscape(r.Volume) + "/" + url.PathEscape(r.Action)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return Reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	var rep Reply
	if err := c.roundTrip(c.stream, req, &rep); err != nil {
		return Reply{}, err
	}
	return rep, nil
}

// maxEventBytes bounds one line of the event stream.
const maxEventBytes = 1 << 20

// Events follows GET /v1/events, calling fn with each event in order
// until the daemon ends the stream (nil: it is stopping), ctx ends
// (ctx.Err()) or fn fails (its error). Events a slow reader missed show
// as a gap in Seq.
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	return c.EventLines(ctx, func(line []byte) error {
		var e Event
		if err := json.Unmarshal(line, &e); err != nil {
			return fmt.Errorf("control: bad event from daemon: %w", err)
		}
		return fn(e)
	})
}

// EventLines is Events with each event as the daemon sent it: one JSON
// object, without the newline (fields this client does not know kept).
// line is valid only during the call.
func (c *Client) EventLines(ctx context.Context, fn func(line []byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://blkrepd/v1/events", nil)
	if err != nil {
		return err
	}
	resp, err := c.send(c.stream, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return replyError(resp.StatusCode, body)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), maxEventBytes)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("control: reading events: %w", err)
	}
	return nil
}

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://blkrepd"+path, nil)
	if err != nil {
		return err
	}
	return c.roundTrip(c.hc, req, v)
}

// send does req, naming a daemon that does not answer.
func (c *Client) send(hc *http.Client, req *http.Request) (*http.Response, error) {
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w (no daemon answers on %s)", ErrNotRunning, c.path)
		}
		return nil, fmt.Errorf("control: %w", err)
	}
	return resp, nil
}

// roundTrip does req and decodes a 200 answer into v; any other answer
// is an *ActionError.
func (c *Client) roundTrip(hc *http.Client, req *http.Request, v any) error {
	resp, err := c.send(hc, req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: reading reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return replyError(resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("control: decoding reply: %w", err)
	}
	return nil
}

// replyError turns an error answer into an *ActionError carrying the
// daemon's message.
func replyError(code int, body []byte) error {
	var e struct{ Error string }
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return &ActionError{Code: code, Message: e.Error}
	}
	return &ActionError{Code: code, Message: fmt.Sprintf("control: HTTP %d from blkrepd", code)}
}
