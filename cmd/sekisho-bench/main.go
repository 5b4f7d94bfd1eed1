// Command sekisho-bench is the load benchmark of issue 6: it measures
// sekisho side by side with a direct connection and, when they are
// installed, Debian's Squid and tinyproxy, and writes a Markdown table of
// medians and ratios to direct.
//
// Run it from the repository root, as root (it raises RLIMIT_NOFILE and
// runs Squid and tinyproxy under their own users):
//
//	go run ./cmd/sekisho-bench --out BENCHMARKS.md    # the full run, < 10 minutes
//	go run ./cmd/sekisho-bench --quick                # about a minute, for CI
//	cmd/sekisho-bench/run.sh                           # the full run with profiles
//
// Flags (see -h): --quick, --proxies sekisho,squid,tinyproxy, --reps,
// --duration (of each timed run), --warmup, --scenarios, --clients,
// --workers, --bulk, --bulk-streams, --upload, --idle, --idle-reps,
// --cold-names, --proxy-nofile, --quiet-wait, --tls-kx, --profile DIR,
// --profile-scenarios, --keep.
//
// What it does: it builds sekisho as a release is built (CGO_ENABLED=0),
// starts loopback upstreams in its own process on 127.0.1.1 (Japan in the
// test geo database of geo/geotest), and for every repetition, scenario and
// target — direct, sekisho, squid, tinyproxy, in an order rotated every
// repetition — starts a fresh proxy process with a generated configuration,
// warms it up, measures, and stops it. The scenarios:
//
//  1. small: small GETs on kept-alive connections, many clients: requests/s,
//     p50 and p99 latency, proxy CPU per request;
//  2. bulk: CONNECT tunnel bulk download and upload: MiB/s, proxy CPU s/GiB;
//  3. newtunnel: new connection + CONNECT + TLS handshake + one GET;
//  4. intercept: TLS interception (sekisho, Squid ssl_bump): cold handshakes
//     (a new host name each), warm (one name), kept-alive requests/s;
//  5. upload: a 1 GiB multipart POST with Content-Length over plain HTTP:
//     MiB/s and the proxy's peak RSS growth;
//  6. idle: 10,000 idle tunnels: how many opened and how fast, proxy RSS,
//     file descriptors and threads per tunnel.
//
// Traffic goes to loopback only, every loop is bounded in count and time,
// and every proxy is stopped (its process group, which this program
// created) at the end of its run.
//
// Names: plain HTTP and tunnels use IP-literal URLs and CONNECT targets, so
// no proxy resolves anything. Interception needs names (a fresh one per
// cold handshake): both Squid (hosts_file) and sekisho
// (resolver.hosts_file) read them from one file in the temporary
// directory; /etc/hosts is not touched.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sekisho/sekisho/rules"
)

// options are the command's flags, after --quick has applied its defaults.
type options struct {
	out         string
	quick       bool
	proxies     []string
	reps        int
	duration    time.Duration
	warmup      time.Duration
	scenarios   []string
	clients     int
	workers     int
	bulkBytes   int64
	bulkStreams int
	uploadBytes int64
	idleTunnels int
	coldNames   int
	proxyNofile int
	profileDir  string
	profileScen []string
	keep        bool
	idleReps    int
	quietWait   time.Duration
	tlsKX       string
	squidBump   string
}

// curves is what the harness's TLS clients offer and its HTTPS upstream
// accepts (nil: Go's defaults).
func (o *options) curves() []tls.CurveID {
	if o.tlsKX == "x25519" {
		return []tls.CurveID{tls.X25519, tls.CurveP256}
	}
	return nil
}

func (o *options) kxDescription() string {
	if o.tlsKX == "x25519" {
		return "X25519 (the harness's clients and upstream offer no post-quantum hybrid, so every proxy does the same classical handshakes; Debian 12's OpenSSL 3.0 has no ML-KEM anyway)"
	}
	return "Go's defaults (X25519MLKEM768 hybrid where both ends have it: sekisho negotiates it on both legs, Squid with OpenSSL 3.0 cannot)"
}

func main() {
	if os.Getenv(sinkEnv) != "" {
		os.Exit(runSink())
	}
	if addr := os.Getenv(relayEnv); addr != "" {
		os.Exit(runRelay(addr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	opt, err := parseFlags(args, stderr)
	if err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		fmt.Fprintf(stderr, "sekisho-bench: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := benchmark(ctx, opt, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "sekisho-bench: %v\n", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("sekisho-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	fs.StringVar(&o.out, "out", "", "write the Markdown report to this file (it is always printed)")
	fs.BoolVar(&o.quick, "quick", false, "CI-sized run of about a minute: 1 repetition, 1s runs, smaller transfers, 1,000 idle tunnels")
	proxies := fs.String("proxies", "sekisho,squid,tinyproxy,go-relay", "proxies to measure besides direct; squid and tinyproxy are skipped when not installed; go-relay is a minimal Go CONNECT relay (tunnel scenarios only), the ceiling for a Go tunnel")
	fs.IntVar(&o.reps, "reps", 0, "repetitions (default 3; --quick 1)")
	fs.DurationVar(&o.duration, "duration", 0, "length of each timed run (default 3s; --quick 1s)")
	fs.DurationVar(&o.warmup, "warmup", 0, "warm-up before each timed run (default 1s; --quick 300ms)")
	scen := fs.String("scenarios", "small,bulk,newtunnel,intercept,upload,idle", "scenarios to run")
	fs.IntVar(&o.clients, "clients", 64, "concurrent keep-alive clients (small GETs, kept-alive intercepted requests)")
	fs.IntVar(&o.workers, "workers", 32, "concurrent workers making new connections (new tunnels, intercepted handshakes)")
	bulk := fs.String("bulk", "", "bytes each way through tunnels (default 2GiB; --quick 64MiB)")
	fs.IntVar(&o.bulkStreams, "bulk-streams", 4, "tunnels in parallel for the bulk transfer")
	upload := fs.String("upload", "", "size of the plain HTTP upload (default 1GiB; --quick 128MiB)")
	fs.IntVar(&o.idleTunnels, "idle", 0, "idle tunnels to hold open (default 10000; --quick 1000)")
	fs.IntVar(&o.coldNames, "cold-names", 0, "fresh host names per cold interception run (default 1500 per second of --duration; a run that uses them all ends early and says so)")
	fs.IntVar(&o.proxyNofile, "proxy-nofile", 65536, "RLIMIT_NOFILE of the proxies (65536: deploy/systemd's LimitNOFILE)")
	fs.StringVar(&o.profileDir, "profile", "", "after the measured runs, profile sekisho (CPU per scenario, heap with idle tunnels) into this directory")
	profScen := fs.String("profile-scenarios", "small,newtunnel,intercept,upload,idle", "scenarios profiled with --profile")
	fs.IntVar(&o.idleReps, "idle-reps", 1, "repetitions of the idle-tunnel scenario (its memory figures vary little, and it is the slowest)")
	fs.StringVar(&o.tlsKX, "tls-kx", "x25519", `TLS key exchange of the harness's clients and HTTPS upstream: "x25519" (classical, the same work for every proxy) or "go-default" (adds the X25519MLKEM768 hybrid that Go offers and OpenSSL 3.0 lacks)`)
	fs.StringVar(&o.squidBump, "squid-bump", "client-first", `Squid's ssl_bump: "client-first" (bump at step 1: the certificate is made for the CONNECT target before the server is contacted, as sekisho does) or "peek" (peek at step 1, then bump: Squid reaches the server first and mimics its certificate, for every connection)`)
	fs.DurationVar(&o.quietWait, "quiet-wait", 0, "total time the run may spend waiting, before a measurement, for other processes to go quiet (default 30s; --quick 10s)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary directory (configurations and logs of every run)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.proxies = splitList(*proxies)
	o.scenarios = splitList(*scen)
	o.profileScen = splitList(*profScen)
	for _, s := range append(slices.Clone(o.scenarios), o.profileScen...) {
		if scenarioByName(s) == nil {
			return nil, fmt.Errorf("unknown scenario %q", s)
		}
	}
	for _, p := range o.proxies {
		switch p {
		case targetSekisho, targetSquid, targetTinyproxy, targetRelay:
		default:
			return nil, fmt.Errorf("unknown proxy %q (sekisho, squid, tinyproxy, go-relay)", p)
		}
	}
	def := func(q, full int) int {
		if o.quick {
			return q
		}
		return full
	}
	defDur := func(q, full time.Duration) time.Duration {
		if o.quick {
			return q
		}
		return full
	}
	if o.reps <= 0 {
		o.reps = def(1, 3)
	}
	if o.duration <= 0 {
		o.duration = defDur(time.Second, 3*time.Second)
	}
	if o.warmup <= 0 {
		o.warmup = defDur(300*time.Millisecond, time.Second)
	}
	if o.quietWait <= 0 {
		o.quietWait = defDur(10*time.Second, 30*time.Second)
	}
	if o.idleTunnels <= 0 {
		o.idleTunnels = def(1000, 10000)
	}
	var err error
	if o.bulkBytes, err = sizeFlag(*bulk, int64(def(64, 2048))*mib); err != nil {
		return nil, fmt.Errorf("--bulk: %w", err)
	}
	if o.uploadBytes, err = sizeFlag(*upload, int64(def(128*mib, gib))); err != nil {
		return nil, fmt.Errorf("--upload: %w", err)
	}
	if o.coldNames <= 0 {
		o.coldNames = int(1500 * o.duration.Seconds())
	}
	if o.squidBump != "peek" && o.squidBump != "client-first" {
		return nil, fmt.Errorf("--squid-bump is peek or client-first")
	}
	if o.tlsKX != "x25519" && o.tlsKX != "go-default" {
		return nil, fmt.Errorf("--tls-kx is x25519 or go-default")
	}
	if o.clients <= 0 || o.workers <= 0 || o.bulkStreams <= 0 {
		return nil, fmt.Errorf("--clients, --workers and --bulk-streams must be positive")
	}
	return o, nil
}

// sizeFlag parses "512MiB"-style sizes (def when empty).
func sizeFlag(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	v, err := rules.ParseSize(s, false)
	if err != nil {
		return 0, err
	}
	if v <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return v, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
