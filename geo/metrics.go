package geo

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Lookup results, the values of the result label of sekisho_geo_lookups_total.
const (
	resultFound    = "found"
	resultInternal = "internal"
	resultUnknown  = "unknown"
)

// Reload results, the values of the result label of sekisho_geo_reloads_total.
const (
	reloadSuccess = "success"
	reloadFailure = "failure"
)

// metrics are the geo package's Prometheus metrics: defined in one place and
// registered on the registry the caller passes in, never the global one.
type metrics struct {
	buildTime  prometheus.Gauge
	info       *prometheus.GaugeVec
	reloads    *prometheus.CounterVec
	lastOK     prometheus.Gauge
	lastOKTime prometheus.Gauge
	lookups    *prometheus.CounterVec

	// Children bound once, so that Store.Lookup and ReloadFile do no
	// label lookups.
	reloadOK, reloadFailed    prometheus.Counter
	found, internal, unknownC prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		buildTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_geo_database_build_timestamp_seconds",
			Help: "Build time of the geo database in use, as a Unix timestamp; alert when it gets old.",
		}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sekisho_geo_database_info",
			Help: "The geo database in use (always 1): its source, database_type and the schema sekisho decodes.",
		}, []string{"source", "type", "schema"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_geo_reloads_total",
			Help: "Geo database reloads that opened a changed file, by result; a failure keeps the previous database.",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_geo_last_reload_successful",
			Help: "Whether the last geo database reload succeeded (1) or failed and the previous database is still in use (0).",
		}),
		lastOKTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_geo_last_reload_success_timestamp_seconds",
			Help: "Time of the last successful geo database load, as a Unix timestamp.",
		}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_geo_lookups_total",
			Help: "Geo lookups by result: found (the database placed the address), internal or unknown.",
		}, []string{"result"}),
	}
	m.reloadOK = m.reloads.WithLabelValues(reloadSuccess)
	m.reloadFailed = m.reloads.WithLabelValues(reloadFailure)
	m.found = m.lookups.WithLabelValues(resultFound)
	m.internal = m.lookups.WithLabelValues(resultInternal)
	m.unknownC = m.lookups.WithLabelValues(resultUnknown)
	if reg != nil {
		reg.MustRegister(m.buildTime, m.info, m.reloads, m.lastOK, m.lastOKTime, m.lookups)
	}
	return m
}
