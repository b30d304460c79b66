package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"
)

// Client talks to a daemon's control socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{path: path, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
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

func (c *Client) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://blkrepd"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w (no daemon answers on %s)", ErrNotRunning, c.path)
		}
		return fmt.Errorf("control: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("control: reading reply: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("control: %s", e.Error)
		}
		return fmt.Errorf("control: HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("control: decoding reply: %w", err)
	}
	return nil
}
