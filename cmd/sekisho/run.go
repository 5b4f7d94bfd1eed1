package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/proxy"
	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/proxy/mitm"
	"github.com/sekisho/sekisho/rules"
)

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML); without it sekisho runs on its embedded defaults")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sekisho run [--config FILE]

Runs the proxy. Without --config: proxy on 127.0.0.1:3128, admin and
metrics on 127.0.0.1:9128, the embedded geo database and the embedded
default rules (domestic = JP; uploads to other or unknown countries
blocked; downloads allowed).

Signals: SIGHUP reloads the configuration's live parts (pac, helpdesk),
the rules and the geo database; SIGTERM and SIGINT drain in-flight
requests and tunnels, then exit.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sekisho run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg := defaultConfig()
	if *configPath != "" {
		c, err := loadConfig(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "sekisho: %v\n", err)
			return 1
		}
		cfg = c
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	inst, err := start(ctx, cfg, options{stdout: stdout, stderr: stderr, hup: hup})
	if err != nil {
		fmt.Fprintf(stderr, "sekisho: %v\n", err)
		return 1
	}
	proxyAddr := inst.ProxyAddrs[0]
	fmt.Fprintf(stderr, "sekisho %s: proxy listening on %s, admin on %s\n", version, joinAddrs(inst.ProxyAddrs), inst.AdminAddr)
	fmt.Fprintf(stderr, "  rules: %s; geo database: %s\n", describeRules(cfg.Rules), inst.geo.Database().Info().Source)
	fmt.Fprintf(stderr, "  try:   curl -x http://%s http://example.org/\n", displayAddr(proxyAddr))
	fmt.Fprintf(stderr, "  or:    export http_proxy=http://%s https_proxy=http://%s\n", displayAddr(proxyAddr), displayAddr(proxyAddr))
	fmt.Fprintf(stderr, "  PAC:   http://%s/proxy.pac   setup, CA and self-test: http://%s/\n", displayAddr(proxyAddr), displayAddr(proxyAddr))
	if inst.AdminAddr != "" {
		fmt.Fprintf(stderr, "  metrics: http://%s/metrics  status: http://%s/-/status\n", inst.AdminAddr, inst.AdminAddr)
	}
	<-ctx.Done()
	inst.log.Info("shutting down: draining requests and tunnels", "timeout", inst.shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), inst.shutdownTimeout)
	defer cancel()
	if err := inst.Shutdown(sctx); err != nil {
		inst.log.Warn("shutdown", "error", err)
	}
	inst.log.Info("stopped")
	return 0
}

func describeRules(path string) string {
	if path == "" {
		return "built-in defaults"
	}
	return path
}

func displayAddr(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func joinAddrs(a []string) string {
	s := ""
	for i, x := range a {
		if i > 0 {
			s += ", "
		}
		s += x
	}
	return s
}

// options are the parts of start that tests replace.
type options struct {
	stdout, stderr io.Writer
	resolver       dial.Resolver  // nil: the system resolver
	hup            chan os.Signal // SIGHUP deliveries; nil in tests
}

// instance is one running sekisho: listeners, stores, reload loop.
type instance struct {
	ProxyAddrs []string
	AdminAddr  string

	cfg             *config
	log             *slog.Logger
	rules           *rules.Store
	geo             *geo.Store
	proxy           *proxy.Server
	admin           *http.Server
	reloader        *reloader
	auditFile       io.Closer
	audit           *audit.Logger
	issuer          *mitm.Issuer
	shutdownTimeout time.Duration
	wg              sync.WaitGroup
	cancel          context.CancelFunc
}

// start wires and starts everything; it returns once the listeners are
// open. It is the whole of `sekisho run` but the signal handling, so that
// end-to-end tests boot the real wiring from a config.
func start(ctx context.Context, cfg *config, opt options) (*instance, error) {
	if opt.stdout == nil {
		opt.stdout = io.Discard
	}
	if opt.stderr == nil {
		opt.stderr = io.Discard
	}
	log := newLogger(cfg.Log, opt.stderr)

	var db *geo.Database
	var err error
	if cfg.Geo.Database != "" {
		db, err = geo.Open(cfg.Geo.Database)
	} else {
		db, err = geo.Embedded()
	}
	if err != nil {
		return nil, fmt.Errorf("geo database: %w", err)
	}
	set, err := rules.Load(cfg.Rules)
	if err != nil {
		return nil, fmt.Errorf("rules are not valid, not starting:\n%w", err)
	}
	for _, w := range set.Warnings() {
		log.Warn("rules", "warning", w)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics.RegisterBuildInfo(reg, version)
	internal := []netip.Prefix(cfg.Geo.InternalNetworks)
	if internal == nil {
		internal = geo.DefaultInternal()
	}
	geoStore := geo.NewStore(db, internal, reg)
	rulesStore := rules.NewStore(set, reg)

	var auditW io.Writer
	var auditFile io.Closer
	switch cfg.Log.Audit {
	case "", "stdout":
		auditW = opt.stdout
	case "stderr":
		auditW = opt.stderr
	case "off":
		auditW = io.Discard
	default:
		f, err := openAuditFile(cfg.Log.Audit)
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		auditW, auditFile = f, f
	}

	var lns []net.Listener
	var auditLog *audit.Logger
	closeAll := func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
		if auditLog != nil {
			_ = auditLog.Close()
		}
		if auditFile != nil {
			_ = auditFile.Close()
		}
	}
	var self []netip.AddrPort
	inst := &instance{cfg: cfg, log: log, rules: rulesStore, geo: geoStore, auditFile: auditFile}
	for _, addr := range cfg.Listen {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("proxy listener: %w", err)
		}
		lns = append(lns, ln)
		inst.ProxyAddrs = append(inst.ProxyAddrs, ln.Addr().String())
		self = append(self, selfAddrs(ln.Addr())...)
	}
	var adminLn net.Listener
	if cfg.AdminListen != "" {
		adminLn, err = net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		lns = append(lns, adminLn)
		inst.AdminAddr = adminLn.Addr().String()
		self = append(self, selfAddrs(adminLn.Addr())...)
	}

	if cfg.Resolver.HostsFile != "" {
		var next dial.Resolver = net.DefaultResolver
		if opt.resolver != nil {
			next = opt.resolver
		}
		hr, err := loadHostsFile(cfg.Resolver.HostsFile, next)
		if err != nil {
			closeAll()
			return nil, err
		}
		opt.resolver = hr
	}
	// Buffered: one write per 64 KiB or 200 ms, not one per request.
	auditLog = audit.NewBuffered(auditW, 200*time.Millisecond)
	auditLog.OnError = auditErrorReporter(log, reg)
	inst.audit = auditLog
	issuer, roots, err := loadTLS(cfg.TLS, reg)
	if err != nil {
		closeAll()
		return nil, err
	}
	if w := caExpiryWarning(issuer, time.Now()); w != "" {
		log.Error(w, "ca_dir", cfg.TLS.CADir)
	}
	pac, err := buildPAC(cfg.PAC, inst.ProxyAddrs)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("pac: %w", err)
	}
	inst.issuer = issuer
	lim := cfg.Limits
	srv, err := proxy.New(proxy.Config{
		Issuer:            issuer,
		UpstreamRoots:     roots,
		Rules:             rulesStore,
		Geo:               geoStore,
		Resolver:          opt.resolver,
		AllowedClients:    []netip.Prefix(cfg.Clients.Allow),
		DenyDestinations:  cfg.denyList(),
		AllowDestinations: []netip.Prefix(cfg.Destinations.Allow),
		Self:              self,
		Audit:             auditLog,
		Log:               log,
		Registerer:        reg,
		Helpdesk:          cfg.Helpdesk,
		PAC:               pac,
		Limits: proxy.Limits{
			HoldBodyBytes:         int(lim.HoldBodyBytes),
			ReadHeaderTimeout:     lim.ReadHeaderTimeout,
			IdleTimeout:           lim.IdleTimeout,
			BodyIdleTimeout:       lim.BodyIdleTimeout,
			WriteIdleTimeout:      lim.WriteIdleTimeout,
			ResolveTimeout:        lim.ResolveTimeout,
			DialTimeout:           lim.DialTimeout,
			ResponseHeaderTimeout: lim.ResponseHeaderTimeout,
			MaxHeaderBytes:        int(lim.MaxHeaderBytes),
			MaxConns:              lim.MaxConnections,
			MaxIdleConnsPerHost:   lim.MaxIdleConnsPerHost,
		},
	})
	if err != nil {
		closeAll()
		return nil, err
	}
	inst.proxy = srv
	inst.shutdownTimeout = lim.ShutdownTimeout
	if inst.shutdownTimeout <= 0 {
		inst.shutdownTimeout = 30 * time.Second
	}

	rctx, cancel := context.WithCancel(context.Background())
	inst.cancel = cancel
	inst.reloader = newReloader(cfg.Rules, cfg.Geo.Database, rulesStore, geoStore, log)
	if cfg.path != "" {
		// sekisho.yaml reloads too: its PAC and helpdesk change live.
		inst.reloader.config = newConfigFile(cfg, func(c *config) error {
			pac, err := buildPAC(c.PAC, inst.ProxyAddrs)
			if err != nil {
				return fmt.Errorf("%s: pac.%w", c.path, err)
			}
			srv.SetPAC(pac)
			srv.SetHelpdesk(c.Helpdesk)
			return nil
		}, reg)
	}
	if af, ok := auditFile.(*auditLogFile); ok {
		// SIGHUP also reopens the audit log, so that logrotate can move it
		// away and signal, without copytruncate's lost lines.
		inst.reloader.onHUP = func() {
			_ = auditLog.Flush() // lines logged before the rotation go to the old file
			if err := af.reopen(); err != nil {
				log.Error("cannot reopen the audit log; still writing to the old file", "path", af.path, "error", err)
			} else {
				log.Info("audit log reopened", "path", af.path)
			}
		}
	}
	if err := inst.reloader.watch(); err != nil {
		log.Warn("file watching is off; reload with SIGHUP or POST /-/reload", "error", err)
	}
	inst.wg.Add(1)
	go func() {
		defer inst.wg.Done()
		inst.reloader.run(rctx, opt.hup)
	}()

	for _, ln := range lns[:len(cfg.Listen)] {
		inst.wg.Add(1)
		go func(ln net.Listener) {
			defer inst.wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("proxy listener stopped", "addr", ln.Addr().String(), "error", err)
			}
		}(ln)
	}
	if adminLn != nil {
		inst.admin = &http.Server{
			Handler: proxy.NewAdmin(proxy.AdminConfig{
				Gatherer: reg,
				Pprof:    cfg.Admin.Pprof,
				PAC:      http.HandlerFunc(srv.ServePAC),
				Reload:   inst.reloader.request,
				Status:   inst.status,
				Ready:    inst.ready,
			}),
			ReadHeaderTimeout: 10 * time.Second,
		}
		inst.wg.Add(1)
		go func() {
			defer inst.wg.Done()
			if err := inst.admin.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin listener stopped", "error", err)
			}
		}()
	}
	log.Info("started", "proxy", joinAddrs(inst.ProxyAddrs), "admin", inst.AdminAddr,
		"rules", describeRules(cfg.Rules), "rules_hash", shortHash(set.Hash()),
		"geo", db.Info().Source, "geo_built", db.Info().BuildTime.Format(time.DateOnly))
	return inst, nil
}

// caExpiryWarning says when the interception CA has expired or ends
// within 30 days ("" otherwise): every intercepted site then fails in the
// browsers, and staff PCs need the new CA before the switch.
func caExpiryWarning(issuer *mitm.Issuer, now time.Time) string {
	if issuer == nil {
		return ""
	}
	end := issuer.CA().Cert.NotAfter
	switch {
	case !now.Before(end):
		return fmt.Sprintf("the interception CA expired on %s: intercepted HTTPS fails until a new CA (sekisho ca init) is rolled out and configured", end.Format(time.DateOnly))
	case end.Sub(now) < 30*24*time.Hour:
		return fmt.Sprintf("the interception CA expires on %s: create a new one (sekisho ca init) and roll it out to the PCs before then", end.Format(time.DateOnly))
	}
	return ""
}

// auditErrorReporter counts failed audit log writes and the lines they
// lost, and logs them at most once a minute (a full disk fails every
// write): a compliance log with holes must not go unnoticed.
func auditErrorReporter(log *slog.Logger, reg prometheus.Registerer) func(error, int) {
	errs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sekisho_audit_write_errors_total",
		Help: "Failed writes of the audit log (full disk, I/O error); each lost the lines it carried.",
	})
	lost := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sekisho_audit_lines_lost_total",
		Help: "Audit lines lost to failed writes.",
	})
	reg.MustRegister(errs, lost)
	var last time.Time // under the audit logger's lock
	var since int
	return func(err error, lines int) {
		errs.Inc()
		lost.Add(float64(lines))
		since += lines
		if now := time.Now(); now.Sub(last) >= time.Minute {
			log.Error("audit log write failed; lines lost", "error", err, "lines_lost", since)
			last, since = now, 0
		}
	}
}

// auditLogFile is the audit log as a file that SIGHUP reopens.
type auditLogFile struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

func openAuditFile(path string) (*auditLogFile, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	return &auditLogFile{path: path, f: f}, nil
}

func (a *auditLogFile) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Write(p)
}

func (a *auditLogFile) reopen() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	a.mu.Lock()
	old := a.f
	a.f = f
	a.mu.Unlock()
	return old.Close()
}

func (a *auditLogFile) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.f.Close()
}

// loadTLS loads the interception CA (refusing a key others can read) and
// the extra upstream roots. Without tls.ca_dir, interception is off.
func loadTLS(c tlsConfig, reg prometheus.Registerer) (*mitm.Issuer, *x509.CertPool, error) {
	if c.CADir == "" {
		if len(c.UpstreamRoots) > 0 {
			return nil, nil, errors.New("tls.upstream_roots is set but tls.ca_dir is not: upstream roots only matter for intercepted connections")
		}
		return nil, nil, nil
	}
	ca, err := mitm.LoadCA(c.CADir)
	if err != nil {
		return nil, nil, fmt.Errorf("TLS interception: %w", err)
	}
	issuer, err := mitm.NewIssuer(ca, mitm.IssuerOptions{MaxEntries: c.CertificateCache, Validity: c.LeafValidity}, reg)
	if err != nil {
		return nil, nil, err
	}
	var roots *x509.CertPool
	if len(c.UpstreamRoots) > 0 {
		roots, err = x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		for _, f := range c.UpstreamRoots {
			pemData, err := os.ReadFile(f)
			if err != nil {
				return nil, nil, fmt.Errorf("tls.upstream_roots: %w", err)
			}
			if !roots.AppendCertsFromPEM(pemData) {
				return nil, nil, fmt.Errorf("tls.upstream_roots: %s holds no PEM certificate", f)
			}
		}
	}
	return issuer, roots, nil
}

// selfAddrs lists the addresses at which a listener is reachable, so that
// the dialer refuses to connect back to it. A wildcard listener is
// reachable at every local address.
func selfAddrs(a net.Addr) []netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return nil
	}
	if !ap.Addr().IsUnspecified() {
		return []netip.AddrPort{ap}
	}
	out := []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap.Port()), netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port())}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range addrs {
			if p, err := netip.ParsePrefix(ia.String()); err == nil {
				out = append(out, netip.AddrPortFrom(p.Addr().Unmap(), ap.Port()))
			}
		}
	}
	return out
}

// Shutdown drains the proxy (requests and tunnels) until ctx is done, then
// stops the admin listener and the reload loop.
func (inst *instance) Shutdown(ctx context.Context) error {
	err := inst.proxy.Shutdown(ctx)
	if inst.admin != nil {
		_ = inst.admin.Shutdown(ctx)
	}
	inst.cancel()
	inst.reloader.close()
	inst.wg.Wait()
	_ = inst.audit.Close()
	if inst.auditFile != nil {
		_ = inst.auditFile.Close()
	}
	return err
}

func (inst *instance) ready() error {
	if inst.proxy.ShuttingDown() {
		return errors.New("shutting down")
	}
	return nil
}

// status is GET /-/status: what is in force, and why a reload failed.
func (inst *instance) status() any {
	info := inst.geo.Database().Info()
	pac := map[string]any{}
	if p := inst.proxy.PAC(); p != nil {
		pac["etag"], pac["proxies"] = p.ETag(), p.Proxies()
	}
	return map[string]any{
		"version": version,
		"proxy":   inst.ProxyAddrs,
		"config": map[string]any{
			"path":       inst.cfg.path,
			"last_error": inst.reloader.lastConfigError(),
		},
		"pac":   pac,
		"rules": inst.rules.Status(),
		"geo": map[string]any{
			"source":     info.Source,
			"type":       info.DatabaseType,
			"schema":     info.Schema,
			"built":      info.BuildTime,
			"sha256":     info.SHA256,
			"last_error": inst.reloader.lastGeoError(),
		},
	}
}

// denyList is the built-in deny list plus the configured additions.
func (c *config) denyList() []netip.Prefix {
	return append(dial.DefaultDeny(), c.Destinations.Deny...)
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func newLogger(c logConfig, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch c.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func exitUsage(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}
