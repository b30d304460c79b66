package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

const (
	cmdPath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
	// waitDelay bounds the wait for the output pipe once the shell has
	// exited (or was killed): a background process that did not redirect
	// its output keeps the pipe open.
	waitDelay = 2 * time.Second
	maxOut    = 8 << 20  // of a reply's "out"
	maxLine   = 64 << 10 // a longer streamed line is sent in pieces
)

// runCmd runs a cmd request and replies; j is its registration.
func (s *server) runCmd(req request, j *job) {
	ctx := context.Background()
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c := exec.CommandContext(ctx, "/bin/sh", "-c", *req.Cmd)
	c.Dir = "/"
	c.Env = append(os.Environ(), cmdPath) // the last PATH wins
	// Its own process group, so that a timeout or a signal request reaches
	// the children too (except those that left it, e.g. with setsid).
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error {
		if err := syscall.Kill(-c.Process.Pid, syscall.SIGKILL); err != syscall.ESRCH {
			return err
		}
		return os.ErrProcessDone // the group is gone: not a failure of the command
	}
	c.WaitDelay = waitDelay
	if len(req.Stdin) > 0 {
		c.Stdin = bytes.NewReader(req.Stdin)
	}
	var out *capped
	var lines *lineSender
	if req.Stream {
		lines = &lineSender{s: s, id: req.ID}
		c.Stdout, c.Stderr = lines, lines // the same writer: one pipe, merged
	} else {
		out = &capped{}
		c.Stdout, c.Stderr = out, out
	}

	err := c.Start()
	if err != nil {
		close(j.started)
		s.unregister(req.ID)
		s.fail(req.ID, "cannot start: %v", err)
		return
	}
	j.pgid = c.Process.Pid
	close(j.started)
	err = c.Wait()
	s.unregister(req.ID)
	if errors.Is(err, exec.ErrWaitDelay) {
		s.logf("request %d: output still open %v after the shell exited (a background process that did not redirect it); stopped reading", req.ID, waitDelay)
	}

	d := done{ID: req.ID, Done: true}
	d.Code, d.Error = status(c.ProcessState, err, ctx.Err(), timeout)
	if lines != nil {
		lines.flush()
	} else {
		o := out.String()
		d.Out = &o
	}
	s.send(d)
}

// status is a finished command's code and error: -1 with the reason when
// it did not exit by itself.
func status(ps *os.ProcessState, err, ctxErr error, timeout time.Duration) (int, string) {
	if ps == nil {
		return -1, err.Error()
	}
	ws, _ := ps.Sys().(syscall.WaitStatus)
	var ee *exec.ExitError
	switch {
	case ctxErr != nil && (ws.Signaled() || errors.Is(err, ctxErr)):
		return -1, fmt.Sprintf("timeout after %v", timeout)
	case ws.Signaled():
		return -1, fmt.Sprintf("killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
	case err != nil && !errors.As(err, &ee) && !errors.Is(err, exec.ErrWaitDelay):
		return ps.ExitCode(), err.Error() // e.g. the output could not be read
	}
	return ps.ExitCode(), ""
}

// capped keeps the first maxOut bytes written to it.
type capped struct {
	b         bytes.Buffer
	truncated bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOut - c.b.Len(); len(p) > room {
		c.b.Write(p[:room])
		c.truncated = true
	} else {
		c.b.Write(p)
	}
	return len(p), nil // keep draining the pipe
}

func (c *capped) String() string {
	if c.truncated {
		return c.b.String() + "\n[output truncated]"
	}
	return c.b.String()
}

// lineSender sends every line written to it as a stream message, stamped
// with the time its end was read.
type lineSender struct {
	s    *server
	id   uint64
	buf  []byte // a partial line
	last int64  // when the last piece of buf was read
}

type lineMsg struct {
	ID   uint64 `json:"id"`
	Line string `json:"line"`
	T    int64  `json:"t"`
}

func (l *lineSender) Write(p []byte) (int, error) {
	l.last = time.Now().UnixNano()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.s.send(lineMsg{ID: l.id, Line: string(l.buf[:i]), T: l.last})
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) >= maxLine {
		l.flush()
	}
	return len(p), nil
}

// flush sends a partial line.
func (l *lineSender) flush() {
	if len(l.buf) > 0 {
		l.s.send(lineMsg{ID: l.id, Line: string(l.buf), T: l.last})
		l.buf = nil
	}
}
