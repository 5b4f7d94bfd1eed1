package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminConfig wires the admin listener: metrics, health, readiness, status
// and the reload endpoint. It is served on its own address (127.0.0.1:9128
// by default), never on the proxy port.
type AdminConfig struct {
	Gatherer prometheus.Gatherer
	// Reload runs one reload of the configuration, rules and geo database
	// and returns its error; POST /-/reload answers 200 or 500 with that
	// error.
	Reload func(ctx context.Context) error
	// Status returns a JSON-encodable snapshot for GET /-/status.
	Status func() any
	// Ready returns nil when the proxy should receive traffic.
	Ready func() error
	// PAC serves the PAC file at /proxy.pac and /wpad.dat (Server.ServePAC).
	PAC http.Handler
	// Pprof mounts Go's profiler at /debug/pprof/ (admin.pprof in
	// sekisho.yaml): for finding where time goes under load, off by default.
	Pprof bool
}

// NewAdmin returns the admin handler.
func NewAdmin(cfg AdminConfig) http.Handler {
	mux := http.NewServeMux()
	if cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		EnableOpenMetrics: false,
		ErrorHandling:     promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Reload == nil {
			w.WriteHeader(http.StatusNotImplemented)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := cfg.Reload(ctx); err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte("reload failed; the previous configuration stays in force:\n" + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("reloaded\n"))
	})
	mux.HandleFunc("GET /-/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		var v any = map[string]string{}
		if cfg.Status != nil {
			v = cfg.Status()
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	})
	if cfg.PAC != nil {
		mux.Handle("GET /proxy.pac", cfg.PAC)
		mux.Handle("GET /wpad.dat", cfg.PAC)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("sekisho admin\n\n/metrics      Prometheus metrics\n/healthz      liveness\n/readyz       readiness\n/-/status     configuration, rules and geo database in force, last reload errors (JSON)\n/-/reload     POST: reload the configuration (pac, helpdesk), rules and geo database\n/proxy.pac    the PAC file (also /wpad.dat)\n"))
	})
	return mux
}
