package main

import "sync"

// Target names. "direct" is the client talking to the upstream itself: the
// baseline every ratio is taken against.
const (
	targetDirect    = "direct"
	targetSekisho   = "sekisho"
	targetSquid     = "squid"
	targetTinyproxy = "tinyproxy"
)

// allTargets is the column order of the report.
var allTargets = []string{targetDirect, targetSekisho, targetSquid, targetTinyproxy, targetRelay}

// metric describes one measured quantity and how to present it.
type metric struct {
	ID       string
	Scenario string // the table's group heading
	Label    string
	Unit     string
	// Higher is true when a larger value is better (throughput); false for
	// latencies, CPU and memory.
	Higher bool
	// Ratio is true when the value is shown with its ratio to direct.
	Ratio bool
}

// Metric identifiers.
const (
	mSmallRPS = "small.rps"
	mSmallP50 = "small.p50"
	mSmallP99 = "small.p99"
	mSmallCPU = "small.cpu"
	mSmallErr = "small.errors"
	mBulkDown = "bulk.down"
	mBulkUp   = "bulk.up"
	mBulkDCPU = "bulk.down_cpu"
	mBulkUCPU = "bulk.up_cpu"
	mNewRate  = "new.rate"
	mNewP99   = "new.p99"
	mNewCPU   = "new.cpu"
	mNewErr   = "new.errors"
	mICold    = "icpt.cold"
	mIColdCPU = "icpt.cold_cpu"
	mIWarm    = "icpt.warm"
	mIWarmCPU = "icpt.warm_cpu"
	mIRPS     = "icpt.rps"
	mIP99     = "icpt.p99"
	mIErr     = "icpt.errors"
	mUpRate   = "upload.rate"
	mUpRSS    = "upload.rss"
	mUpCPU    = "upload.cpu"
	mIdleOpen = "idle.opened"
	mIdleSecs = "idle.seconds"
	mIdleKiB  = "idle.kib"
	mIdleFDs  = "idle.fds"
	mIdleThrd = "idle.threads"
	mIdleSlab = "idle.slab_kib"
)

// metrics lists every metric in report order.
var metrics = []metric{
	{mSmallRPS, "1. Small GETs, kept-alive", "requests/s", "", true, true},
	{mSmallP50, "1. Small GETs, kept-alive", "p50 latency", "ms", false, true},
	{mSmallP99, "1. Small GETs, kept-alive", "p99 latency", "ms", false, true},
	{mSmallCPU, "1. Small GETs, kept-alive", "proxy CPU per request", "µs", false, false},
	{mSmallErr, "1. Small GETs, kept-alive", "failed requests", "", false, false},
	{mBulkDown, "2. CONNECT tunnel bulk", "download", "MiB/s", true, true},
	{mBulkUp, "2. CONNECT tunnel bulk", "upload", "MiB/s", true, true},
	{mBulkDCPU, "2. CONNECT tunnel bulk", "proxy CPU per GiB down", "s", false, false},
	{mBulkUCPU, "2. CONNECT tunnel bulk", "proxy CPU per GiB up", "s", false, false},
	{mNewRate, "3. New tunnel + TLS + 1 request", "tunnels/s", "", true, true},
	{mNewP99, "3. New tunnel + TLS + 1 request", "p99 latency", "ms", false, true},
	{mNewCPU, "3. New tunnel + TLS + 1 request", "proxy CPU per tunnel", "µs", false, false},
	{mNewErr, "3. New tunnel + TLS + 1 request", "failed tunnels", "", false, false},
	{mICold, "4. Intercepted HTTPS", "cold handshakes/s (new name each)", "", true, true},
	{mIColdCPU, "4. Intercepted HTTPS", "proxy CPU per cold handshake", "ms", false, false},
	{mIWarm, "4. Intercepted HTTPS", "warm handshakes/s (one name)", "", true, true},
	{mIWarmCPU, "4. Intercepted HTTPS", "proxy CPU per warm handshake", "ms", false, false},
	{mIRPS, "4. Intercepted HTTPS", "kept-alive requests/s", "", true, true},
	{mIP99, "4. Intercepted HTTPS", "kept-alive p99 latency", "ms", false, true},
	{mIErr, "4. Intercepted HTTPS", "failed handshakes/requests", "", false, false},
	{mUpRate, "5. Plain HTTP upload (POST, Content-Length)", "throughput", "MiB/s", true, true},
	{mUpRSS, "5. Plain HTTP upload (POST, Content-Length)", "proxy peak RSS growth", "MiB", false, false},
	{mUpCPU, "5. Plain HTTP upload (POST, Content-Length)", "proxy CPU per GiB", "s", false, false},
	{mIdleOpen, "6. Idle tunnels", "tunnels opened", "", true, false},
	{mIdleSecs, "6. Idle tunnels", "time to open them", "s", false, false},
	{mIdleKiB, "6. Idle tunnels", "proxy RSS per tunnel", "KiB", false, false},
	{mIdleFDs, "6. Idle tunnels", "proxy file descriptors per tunnel", "", false, false},
	{mIdleThrd, "6. Idle tunnels", "proxy threads per tunnel", "", false, false},
	{mIdleSlab, "6. Idle tunnels", "kernel slab per tunnel, machine-wide (direct: the client's and sink's sockets alone)", "KiB", false, false},
}

// results holds every repetition's value of every metric, per target.
type results struct {
	mu   sync.Mutex
	vals map[string]map[string][]float64 // metric → target → one value per rep
}

func newResults() *results {
	return &results{vals: map[string]map[string][]float64{}}
}

// add records one repetition's value.
func (r *results) add(metricID, target string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.vals[metricID]
	if m == nil {
		m = map[string][]float64{}
		r.vals[metricID] = m
	}
	m[target] = append(m[target], v)
}

// median returns the median of a metric for a target.
func (r *results) median(metricID, target string) (float64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return median(r.vals[metricID][target])
}

// values returns the recorded repetitions.
func (r *results) values(metricID, target string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]float64(nil), r.vals[metricID][target]...)
}

// ratio is a target's median over direct's median.
func (r *results) ratio(metricID, target string) (float64, bool) {
	v, ok := r.median(metricID, target)
	d, okd := r.median(metricID, targetDirect)
	if !ok || !okd || d == 0 {
		return 0, false
	}
	return v / d, true
}
