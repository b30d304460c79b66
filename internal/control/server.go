package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Server serves the control API on a unix socket.
type Server struct {
	path string
	l    net.Listener
	http *http.Server
	h    Handler
	log  *slog.Logger
	// noEvents: the handler publishes no events (Listen).
	noEvents bool
	// done is closed by Shutdown: event streams end.
	done     chan struct{}
	stopOnce sync.Once
}

// Listen creates the control socket at path (log may be nil) (removing a stale one: a
// socket nobody answers on) and returns a server not yet serving. It serves
// only the status: actions are answered 501 and GET /v1/events too. A daemon
// with replication uses ListenHandler.
func Listen(path string, status func() Status, log *slog.Logger) (*Server, error) {
	s, err := ListenHandler(path, statusOnly(status), log)
	if s != nil {
		s.noEvents = true
	}
	return s, err
}

// statusOnly is the Handler of a daemon that has no actions or events.
type statusOnly func() Status

func (f statusOnly) Status() Status { return f() }

func (statusOnly) Do(context.Context, Request) (Reply, error) {
	return Reply{}, &ActionError{Code: http.StatusNotImplemented, Message: "this blkrepd does not support operator actions"}
}

func (statusOnly) Subscribe() (<-chan Event, func()) {
	ch := make(chan Event)
	close(ch)
	return ch, func() {}
}

// ListenHandler creates the control socket at path like Listen and returns
// a server, not yet serving, that answers with h. log may be nil.
func ListenHandler(path string, h Handler, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l, err := ListenUnix(path)
	if err != nil {
		return nil, err
	}
	s := &Server{path: path, l: l, h: h, log: log, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, h.Status())
	})
	mux.HandleFunc("POST /v1/volumes/{volume}/{action}", s.action)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// action serves POST /v1/volumes/{volume}/{action}.
func (s *Server) action(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRequest(r.Body, r.PathValue("volume"), r.PathValue("action"))
	if err == nil {
		err = s.knownVolume(req.Volume)
	}
	var rep Reply
	if err == nil {
		rep, err = s.h.Do(r.Context(), req)
	}
	log := s.log.With("volume", req.Volume, "action", req.Action, "force", req.Force, "full", req.Full, "discard_my_data", req.DiscardMyData)
	var ae *ActionError
	switch {
	case err == nil:
		log.Info("operator action", "message", rep.Message)
		writeJSON(w, http.StatusOK, rep)
	case errors.As(err, &ae):
		code := ae.Code
		if code < 400 || code > 599 {
			code = http.StatusInternalServerError // a refusal must not look like success
		}
		log.Info("operator action refused", "code", ae.Code, "message", ae.Message)
		writeError(w, code, ae.Message)
	default:
		log.Error("operator action failed", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// knownVolume answers 404 for a volume the status does not list.
func (s *Server) knownVolume(name string) error {
	var names []string
	for _, v := range s.h.Status().Volumes {
		if v.Name == name {
			return nil
		}
		names = append(names, v.Name)
	}
	held := "it holds none"
	if len(names) > 0 {
		held = "it holds " + strings.Join(names, ", ")
	}
	return &ActionError{Code: http.StatusNotFound, Message: fmt.Sprintf("no volume %q on this node (%s)", name, held)}
}

// eventWriteTimeout disconnects an event reader that stops reading.
const eventWriteTimeout = 30 * time.Second

// events serves GET /v1/events: newline-delimited JSON, one Event a line,
// flushed one by one, until the client goes away, the handler closes the
// channel or the server shuts down.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if s.noEvents {
		writeError(w, http.StatusNotImplemented, "this blkrepd does not publish events")
		return
	}
	ch, cancel := s.h.Subscribe()
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case e, ok := <-ch:
			if !ok {
				return
			}
			rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
			if err := enc.Encode(e); err != nil {
				return
			}
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}
}

// Serve blocks until Shutdown.
func (s *Server) Serve() error {
	err := s.http.Serve(s.l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops serving and removes the socket. It ends event streams
// at once, then waits (net/http's Shutdown) for requests in progress; if
// ctx ends first it closes their connections and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.done) })
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	os.Remove(s.path)
	return err
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// ErrInUse is returned by ListenUnix when a live process serves the path.
var ErrInUse = errors.New("control: socket in use by a running process")

// ListenUnix listens on a unix socket path, mode 0600. An existing socket
// that accepts connections is in use (ErrInUse); one that refuses them is
// stale and replaced. Any other existing file is an error.
func ListenUnix(path string) (net.Listener, error) {
	if st, err := os.Lstat(path); err == nil {
		if st.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: %s (is another blkrepd running?)", ErrInUse, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale socket %s: %w", path, err)
		}
	}
	old := umask(0o177)
	l, err := net.Listen("unix", path)
	umask(old)
	if err != nil {
		return nil, err
	}
	l.(*net.UnixListener).SetUnlinkOnClose(true)
	return l, nil
}
