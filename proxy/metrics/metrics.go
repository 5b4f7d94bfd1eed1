// Package metrics defines every sekisho_proxy_* metric in one place, with
// the label names and the fixed label values, so that dashboards and alert
// rules have one source of truth.
//
// Labels are bounded: service is a catalog name or "other"; country an ISO
// code, "internal" or "unknown"; client_group a rules-file group or "other";
// action, mode and reason come from the fixed sets below. Hosts, URLs and
// client addresses are never labels — they are in the audit log.
package metrics

import (
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of "mode".
const (
	ModeHTTP      = "http"
	ModeTunnel    = "tunnel"
	ModeWebSocket = "websocket"
	ModeInspected = "inspected"
)

// Label values of "reason" for refusals and errors.
const (
	ReasonClientNotAllowed   = "client_not_allowed"
	ReasonDestinationDenied  = "destination_denied"
	ReasonBadRequest         = "bad_request"
	ReasonAmbiguousFraming   = "ambiguous_framing"
	ReasonResolve            = "resolve"
	ReasonDial               = "dial"
	ReasonTimeout            = "timeout"
	ReasonUpstream           = "upstream"
	ReasonUpstreamTLS        = "upstream_tls"
	ReasonUnsupportedRequest = "unsupported"
	ReasonDomainFronting     = "domain_fronting"
	// ReasonClientClosed is a request whose client went away before the
	// answer (a browser cancels requests all the time): in the audit log
	// with status 499, not counted as an upstream error.
	ReasonClientClosed = "client_closed"
)

// Label names.
const (
	LabelMode        = "mode"
	LabelService     = "service"
	LabelCountry     = "country"
	LabelAction      = "action"
	LabelClientGroup = "client_group"
	LabelRule        = "rule"
	LabelReason      = "reason"
)

// DurationBuckets are the request duration buckets, shared by every
// latency histogram: from a cached-connection request (1 ms) to a long
// upload (5 min).
var DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// Metrics holds the proxy's metrics.
type Metrics struct {
	Requests      *prometheus.CounterVec   // mode, service, country, action, client_group
	UploadBytes   *prometheus.CounterVec   // mode, service, country, action, client_group
	DownloadBytes *prometheus.CounterVec   // mode, service, country, action, client_group
	Blocked       *prometheus.CounterVec   // service, country, rule, client_group
	WouldBlock    *prometheus.CounterVec   // service, country, rule, client_group
	BudgetCloses  *prometheus.CounterVec   // service, country, client_group
	Refused       *prometheus.CounterVec   // reason
	Errors        *prometheus.CounterVec   // reason
	Duration      *prometheus.HistogramVec // mode
	ActiveConns   prometheus.Gauge
	MaxConns      prometheus.Gauge
	ActiveTunnels *prometheus.GaugeVec // mode
	HeldBodies    prometheus.Counter
}

// New creates the metrics and registers them on reg (when not nil).
func New(reg prometheus.Registerer) *Metrics {
	traffic := []string{LabelMode, LabelService, LabelCountry, LabelAction, LabelClientGroup}
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_requests_total",
			Help: "Requests and tunnels handled, by mode, service, effective country, action and client group.",
		}, traffic),
		UploadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_upload_bytes_total",
			Help: "Bytes sent upstream by clients (request bodies, tunnel and WebSocket uploads).",
		}, traffic),
		DownloadBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_download_bytes_total",
			Help: "Bytes received from upstream and relayed to clients.",
		}, traffic),
		Blocked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_blocked_total",
			Help: "Requests and tunnels blocked, by service, effective country, rule and client group.",
		}, []string{LabelService, LabelCountry, LabelRule, LabelClientGroup}),
		WouldBlock: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_would_block_total",
			Help: "Requests and tunnels that report-only mode let through although a block rule matched.",
		}, []string{LabelService, LabelCountry, LabelRule, LabelClientGroup}),
		BudgetCloses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_tunnel_budget_exceeded_total",
			Help: "Tunnels whose client sent more than the upload budget (closed unless in report-only mode).",
		}, []string{LabelService, LabelCountry, LabelClientGroup}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_refused_total",
			Help: "Requests refused before any policy decision, by reason.",
		}, []string{LabelReason}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_proxy_upstream_errors_total",
			Help: "Requests that failed upstream (resolution, connection, timeout), by reason.",
		}, []string{LabelReason}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sekisho_proxy_request_duration_seconds",
			Help:    "Time from receiving a request (or CONNECT) to its end, by mode.",
			Buckets: DurationBuckets,
		}, []string{LabelMode}),
		ActiveConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_proxy_active_connections",
			Help: "Client connections open now (not counting those handed over to tunnels: see sekisho_proxy_active_tunnels).",
		}),
		MaxConns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_proxy_max_connections",
			Help: "The configured limit of client connections (limits.max_connections); beyond it new clients wait.",
		}),
		ActiveTunnels: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sekisho_proxy_active_tunnels",
			Help: "Tunnels and WebSockets open now, by mode.",
		}, []string{LabelMode}),
		HeldBodies: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sekisho_proxy_held_bodies_total",
			Help: "Requests whose body prefix was held back because a rule needed to see into the body.",
		}),
	}
	for _, r := range []string{ReasonClientNotAllowed, ReasonDestinationDenied, ReasonBadRequest, ReasonAmbiguousFraming, ReasonUnsupportedRequest, ReasonDomainFronting} {
		m.Refused.WithLabelValues(r)
	}
	for _, r := range []string{ReasonResolve, ReasonDial, ReasonTimeout, ReasonUpstream, ReasonUpstreamTLS} {
		m.Errors.WithLabelValues(r)
	}
	for _, mode := range []string{ModeTunnel, ModeWebSocket, ModeInspected} {
		m.ActiveTunnels.WithLabelValues(mode)
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.UploadBytes, m.DownloadBytes, m.Blocked, m.WouldBlock,
			m.BudgetCloses, m.Refused, m.Errors, m.Duration, m.ActiveConns, m.MaxConns, m.ActiveTunnels, m.HeldBodies)
	}
	return m
}

// RegisterConnectionSlots registers sekisho_proxy_connection_slots_used:
// client connections holding one of the limits.max_connections slots,
// tunnels and intercepted sessions included (sekisho_proxy_active_connections
// stops counting a connection once it becomes a tunnel).
func RegisterConnectionSlots(reg prometheus.Registerer, used func() float64) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sekisho_proxy_connection_slots_used",
		Help: "Client connections holding a slot of limits.max_connections, tunnels included; at sekisho_proxy_max_connections new clients wait.",
	}, used))
}

// RegisterBuildInfo registers sekisho_build_info{version, revision, goversion} = 1.
func RegisterBuildInfo(reg prometheus.Registerer, version string) {
	revision, goVersion := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sekisho_build_info",
		Help: "Always 1; the labels say which sekisho build is running.",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(version, revision, goVersion).Set(1)
	reg.MustRegister(g)
}
