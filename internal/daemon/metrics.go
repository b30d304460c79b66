package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/blkrep/blkrep/internal/metrics"
)

// metricsEndpoint is the node's Prometheus endpoint ([[node]] metrics):
// its own registry (never the global one) holding the node's metrics and
// the Go runtime's and process's, served at /metrics. All zero without a
// metrics address.
type metricsEndpoint struct {
	reg *prometheus.Registry
	m   *metrics.Metrics // nil without a metrics address: no latency hooks
	ln  net.Listener
	srv *http.Server
}

// listenMetrics builds the registry and binds the metrics address, before
// any disk is opened, so that a taken port fails the start early. Nothing
// is served until serveMetrics: the status is complete only then.
func (d *Daemon) listenMetrics() error {
	addr := d.node.Metrics
	if addr == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return fmt.Errorf("node %q: metrics: %w", d.node.Name, err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return fmt.Errorf("node %q: metrics: %w", d.node.Name, err)
	}
	m, err := metrics.New(reg, d.node.Name, d.Status)
	if err != nil {
		return fmt.Errorf("node %q: metrics: %w", d.node.Name, err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		// net's error names the address: "listen tcp 127.0.0.1:9641: bind:
		// address already in use".
		return fmt.Errorf("node %q: metrics: %w", d.node.Name, err)
	}
	d.mx = metricsEndpoint{reg: reg, m: m, ln: ln}
	return nil
}

// serveMetrics serves /metrics on the listener bound by listenMetrics.
func (d *Daemon) serveMetrics() {
	if d.mx.ln == nil {
		return
	}
	log := d.log.With("address", d.mx.ln.Addr().String())
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.mx.reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError, // serve what could be gathered
	}))
	d.mx.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv, ln := d.mx.srv, d.mx.ln
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "url", "http://"+ln.Addr().String()+"/metrics")
}

// stopMetrics stops serving, letting a scrape under way finish until ctx
// ends; it closes the listener of a start that failed before serving.
func (d *Daemon) stopMetrics(ctx context.Context) {
	switch {
	case d.mx.srv != nil:
		d.mx.srv.Shutdown(ctx)
	case d.mx.ln != nil:
		d.mx.ln.Close()
	}
}

// promLogger adapts promhttp's logger (errors while gathering or encoding).
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error("metrics scrape", "err", fmt.Sprint(v...)) }
