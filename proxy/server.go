package proxy

import (
	"container/list"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/elazarl/goproxy"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/proxy/framing"
	"github.com/sekisho/sekisho/proxy/h1client"
	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/proxy/mitm"
	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/rules"
)

// RulesSource gives the rule set in force. *rules.Store satisfies it; the
// proxy calls Load once per request and uses that snapshot throughout.
type RulesSource interface {
	Load() *rules.Set
}

// Limits bound what one client can make the proxy hold: time, headers,
// connections, body bytes held before deciding. Zero values take the
// defaults given.
type Limits struct {
	// HoldBodyBytes is how much of a body may be held back when a rule can
	// only be answered from the body (64 KiB).
	HoldBodyBytes int
	// ReadHeaderTimeout bounds reading a request's headers (10s).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a kept-alive client connection with no request
	// (120s).
	IdleTimeout time.Duration
	// BodyIdleTimeout is the longest a client may pause while sending a
	// request body (60s).
	BodyIdleTimeout time.Duration
	// WriteIdleTimeout is the longest a client may take to accept a chunk
	// of the response (60s).
	WriteIdleTimeout time.Duration
	// ResolveTimeout bounds DNS resolution (5s).
	ResolveTimeout time.Duration
	// DialTimeout bounds connecting upstream (10s).
	DialTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for upstream response headers
	// after the request is sent (120s).
	ResponseHeaderTimeout time.Duration
	// MaxHeaderBytes bounds a request's header size (64 KiB).
	MaxHeaderBytes int
	// MaxConns bounds concurrent client connections (10000); further
	// clients wait in the kernel's accept queue.
	MaxConns int
	// MaxIdleConnsPerHost is the upstream keep-alive pool per address (256).
	MaxIdleConnsPerHost int
}

func (l *Limits) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(i *int, v int) {
		if *i <= 0 {
			*i = v
		}
	}
	defInt(&l.HoldBodyBytes, 64<<10)
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.IdleTimeout, 120*time.Second)
	def(&l.BodyIdleTimeout, 60*time.Second)
	def(&l.WriteIdleTimeout, 60*time.Second)
	def(&l.ResolveTimeout, 5*time.Second)
	def(&l.DialTimeout, 10*time.Second)
	def(&l.ResponseHeaderTimeout, 120*time.Second)
	defInt(&l.MaxHeaderBytes, 64<<10)
	defInt(&l.MaxConns, 10000)
	defInt(&l.MaxIdleConnsPerHost, 256)
}

// DefaultAllowedClients are the client networks served when the
// configuration names none: loopback and the private ranges. sekisho is
// never an open proxy.
func DefaultAllowedClients() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("fc00::/7"),
	}
}

// Config wires a Server.
type Config struct {
	Rules RulesSource
	Geo   dial.Locator
	// Resolver resolves destination names (net.DefaultResolver when nil).
	Resolver dial.Resolver
	// AllowedClients may use the proxy (DefaultAllowedClients when nil).
	AllowedClients []netip.Prefix
	// DenyDestinations are never dialed (dial.DefaultDeny when nil).
	DenyDestinations []netip.Prefix
	// AllowDestinations are exceptions to DenyDestinations.
	AllowDestinations []netip.Prefix
	// Self are the proxy's own listening addresses, never dialed.
	Self []netip.AddrPort
	// Audit receives one line per request and tunnel (discarded when nil).
	Audit *audit.Logger
	// Log receives operational messages (discarded when nil).
	Log *slog.Logger
	// Registerer receives the proxy's metrics (not registered when nil).
	Registerer prometheus.Registerer
	// Helpdesk is shown on block and error pages ("情報政策課 内線 1234");
	// SetHelpdesk changes it.
	Helpdesk string
	// PAC is the proxy auto-configuration file served at /proxy.pac and
	// /wpad.dat on the proxy port (none when nil); SetPAC replaces it.
	PAC    *pages.PAC
	Limits Limits
	// Issuer signs the leaf certificates of TLS interception; nil turns
	// interception off (every CONNECT is a tunnel with a budget).
	Issuer *mitm.Issuer
	// UpstreamRoots verify the servers behind intercepted connections
	// (the system roots when nil).
	UpstreamRoots *x509.CertPool
}

// Server is the forward proxy: an http.Handler for absolute-form HTTP and
// CONNECT that decides every request by the rules before anything is sent
// upstream.
type Server struct {
	cfg     Config
	limits  Limits
	rules   RulesSource
	dialer  *dial.Dialer
	gp      *goproxy.ProxyHttpServer
	tr      *http.Transport
	h1      *h1client.Client // bodyless plain GET/HEAD: no Transport goroutines
	rt      goproxy.RoundTripper
	metrics *metrics.Metrics
	audit   *audit.Logger
	log     *slog.Logger
	allowed []netip.Prefix
	srv     *http.Server

	idPrefix string
	idSeq    atomic.Uint64

	issuer *mitm.Issuer
	tlsTrs tlsTransports
	// upstreamTLS is the base client TLS config of intercepted requests:
	// roots, minimum version, and a session cache shared by every pool
	// (a new upstream connection to a known name resumes instead of
	// verifying the chain again).
	upstreamTLS *tls.Config
	connSem     chan struct{} // one slot per client connection, across listeners
	// inflight counts handlers running, so that Shutdown returns only when
	// their audit lines are written (the caller closes the audit log next).
	inflight atomic.Int64
	// acceptWaiting counts slots taken by listeners waiting in Accept.
	acceptWaiting atomic.Int64
	tunnelsMu     sync.Mutex
	tunnels       map[*tunnelHandle]struct{}
	shutting      atomic.Bool

	live live // what a configuration reload changes: PAC, helpdesk
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Rules == nil || cfg.Geo == nil {
		return nil, errors.New("proxy: Config.Rules and Config.Geo are required")
	}
	s := &Server{
		cfg:     cfg,
		limits:  cfg.Limits,
		rules:   cfg.Rules,
		audit:   cfg.Audit,
		log:     cfg.Log,
		allowed: cfg.AllowedClients,
		tunnels: map[*tunnelHandle]struct{}{},
	}
	s.limits.defaults()
	s.live.pac.Store(cfg.PAC)
	s.SetHelpdesk(cfg.Helpdesk)
	s.connSem = make(chan struct{}, s.limits.MaxConns)
	s.issuer = cfg.Issuer
	s.tlsTrs = tlsTransports{max: 1024, lru: list.New(), index: map[tlsTransportKey]*list.Element{}}
	if s.audit == nil {
		s.audit = audit.New(nil)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.allowed == nil {
		s.allowed = DefaultAllowedClients()
	}
	s.metrics = metrics.New(cfg.Registerer)
	s.metrics.MaxConns.Set(float64(s.limits.MaxConns))
	if cfg.Registerer != nil {
		metrics.RegisterConnectionSlots(cfg.Registerer, func() float64 {
			return float64(int64(len(s.connSem)) - s.acceptWaiting.Load())
		})
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	s.idPrefix = hex.EncodeToString(b[:])

	s.dialer = dial.New(dial.Config{
		Resolver:       cfg.Resolver,
		Geo:            cfg.Geo,
		Deny:           cfg.DenyDestinations,
		Allow:          cfg.AllowDestinations,
		Self:           cfg.Self,
		ResolveTimeout: s.limits.ResolveTimeout,
		DialTimeout:    s.limits.DialTimeout,
	})
	// The transport dials only address literals: onRequest rewrites the
	// URL host to the address that was geolocated, so its connection pool
	// is keyed by that address and a pooled connection can never lead
	// somewhere the decision did not look at.
	s.tr = &http.Transport{
		Proxy:                  nil, // never chain through $HTTP_PROXY
		DialContext:            s.dialUpstream,
		MaxIdleConns:           4 * s.limits.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:    s.limits.MaxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  s.limits.ResponseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass the client's Accept-Encoding and the body through untouched
		MaxResponseHeaderBytes: 256 << 10,
	}
	s.upstreamTLS = &tls.Config{
		RootCAs:            cfg.UpstreamRoots, // nil: the system roots
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: tls.NewLRUClientSessionCache(1024),
	}
	s.h1 = &h1client.Client{
		Dial: func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
			return s.dialer.Dial(ctx, ap)
		},
		MaxIdlePerAddr:         s.limits.MaxIdleConnsPerHost,
		MaxIdle:                4 * s.limits.MaxIdleConnsPerHost,
		IdleTimeout:            90 * time.Second,
		ResponseHeaderTimeout:  s.limits.ResponseHeaderTimeout,
		MaxResponseHeaderBytes: 256 << 10,
		TLSConfig:              s.upstreamTLS,
		TLSHandshakeTimeout:    10 * time.Second,
	}
	s.rt = goproxy.RoundTripperFunc(s.roundTrip)

	gp := goproxy.NewProxyHttpServer()
	gp.Tr = s.tr
	gp.ConnectDial = nil
	gp.Logger = slogPrintf{s.log}
	gp.KeepAcceptEncoding = true
	gp.NonproxyHandler = http.HandlerFunc(s.serveNonProxy)
	gp.OnRequest().DoFunc(s.onRequest)
	gp.OnRequest().HandleConnectFunc(s.onConnect)
	gp.OnResponse().DoFunc(s.onResponse)
	// Clients speak HTTP/1.1 inside intercepted tunnels (ALPN http/1.1):
	// per-request deadlines on the client connection rely on it.
	gp.AllowHTTP2 = false
	s.gp = gp

	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.limits.ReadHeaderTimeout,
		IdleTimeout:       s.limits.IdleTimeout,
		MaxHeaderBytes:    s.limits.MaxHeaderBytes,
		ErrorLog:          log.New(&serverLog{log: s.log}, "", 0),
		// Every request must reach ServeHTTP, so that the framing check
		// consumes exactly one verdict per request (net/http would answer
		// "OPTIONS *" itself).
		DisableGeneralOptionsHandler: true,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if cc, ok := c.(*clientConn); ok {
				return context.WithValue(ctx, connKey{}, cc)
			}
			return ctx
		},
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.metrics.ActiveConns.Inc()
			case http.StateHijacked, http.StateClosed:
				s.metrics.ActiveConns.Dec()
			}
		},
	}
	return s, nil
}

// serverLog receives net/http's own messages. Accept errors — most often
// running out of file descriptors, when clients wait unserved — are
// warnings, at most one every 10 s with the count of those held back; the
// rest (clients that misbehave) are debug.
type serverLog struct {
	log        *slog.Logger
	last       atomic.Int64
	suppressed atomic.Int64
}

func (w *serverLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "Accept error") {
		now, last := time.Now().UnixNano(), w.last.Load()
		if now-last >= int64(10*time.Second) && w.last.CompareAndSwap(last, now) {
			w.log.Warn("cannot accept client connections (out of file descriptors? raise LimitNOFILE)",
				"error", msg, "suppressed", w.suppressed.Swap(0))
		} else {
			w.suppressed.Add(1)
		}
		return len(p), nil
	}
	w.log.Debug("http server", "msg", msg)
	return len(p), nil
}

// slogPrintf adapts goproxy's Printf logger to slog at debug level.
type slogPrintf struct{ l *slog.Logger }

func (p slogPrintf) Printf(format string, v ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug("goproxy", "msg", sprintf(format, v...))
	}
}

// Serve accepts client connections on ln until Shutdown. It returns
// http.ErrServerClosed after Shutdown. Several listeners share the
// connection limit.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(newListener(ln, s.connSem, &s.acceptWaiting))
}

// Shutdown stops accepting, lets in-flight requests and tunnels finish
// until ctx is done, then closes what is left. Tunnels are hijacked
// connections that http.Server.Shutdown cannot see, so they are tracked
// here.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutting.Store(true)
	err := s.srv.Shutdown(ctx)
	// Like http.Server.Shutdown, poll: tunnels end on their own schedule.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for s.openTunnels() > 0 {
		select {
		case <-tick.C:
			continue
		case <-ctx.Done():
		}
		// Closed outside the lock: closing an intercepted session runs
		// its untrack, which takes the lock.
		s.tunnelsMu.Lock()
		open := make([]*tunnelHandle, 0, len(s.tunnels))
		for t := range s.tunnels {
			open = append(open, t)
		}
		s.tunnelsMu.Unlock()
		n := len(open)
		for _, t := range open {
			t.close()
		}
		s.log.Warn("shutdown deadline reached; closed open tunnels", "tunnels", n)
		// Closed tunnels end within moments; do not wait forever on one
		// that does not.
		grace := time.After(2 * time.Second)
	wait:
		for s.openTunnels() > 0 {
			select {
			case <-tick.C:
			case <-grace:
				break wait
			}
		}
		break
	}
	s.tr.CloseIdleConnections()
	s.h1.CloseIdleConnections(true)
	s.tlsTrs.closeIdle()
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		_ = s.srv.Close()
		// The handlers of the connections just closed finish within
		// moments, and write their audit lines: wait for them, briefly.
		grace := time.After(2 * time.Second)
	handlers:
		for s.inflight.Load() > 0 {
			select {
			case <-tick.C:
			case <-grace:
				s.log.Warn("shutdown: handlers still running after the connections were closed", "handlers", s.inflight.Load())
				break handlers
			}
		}
	}
	return err
}

// ShuttingDown reports whether Shutdown has begun (readiness goes false).
func (s *Server) ShuttingDown() bool { return s.shutting.Load() }

type tunnelHandle struct {
	close func()
}

func (s *Server) trackTunnel(closeFn func()) func() {
	h := &tunnelHandle{close: closeFn}
	s.tunnelsMu.Lock()
	s.tunnels[h] = struct{}{}
	s.tunnelsMu.Unlock()
	return func() {
		s.tunnelsMu.Lock()
		delete(s.tunnels, h)
		s.tunnelsMu.Unlock()
	}
}

func (s *Server) openTunnels() int {
	s.tunnelsMu.Lock()
	defer s.tunnelsMu.Unlock()
	return len(s.tunnels)
}

type connKey struct{}

// clientConn is an accepted client connection: the framing scanner, plus
// the release of its slot in the connection limit when it closes.
type clientConn struct {
	*framing.Conn
	release func()
	once    sync.Once
	onClose atomic.Pointer[func()]
	// linger: the next Close ends gracefully (lingerOnClose).
	linger atomic.Bool
}

// rstAvoidanceDelay is how long a connection closed with client input left
// unread stays half-closed before it is closed: closing a socket with
// unread input sends a reset, which makes the client drop an answer it has
// not read yet (net/http's server waits the same).
const rstAvoidanceDelay = 500 * time.Millisecond

// lingerOnClose makes the next Close send the end of the stream at once but
// close the socket only after rstAvoidanceDelay, without reading more: for
// an answer (a block page) to a request whose body is left unread.
func (c *clientConn) lingerOnClose() { c.linger.Store(true) }

func (c *clientConn) Close() error {
	var err error
	if c.linger.Swap(false) {
		_ = c.Conn.CloseWrite()
		time.AfterFunc(rstAvoidanceDelay, func() { _ = c.Conn.Close() })
	} else {
		err = c.Conn.Close()
	}
	c.once.Do(c.release)
	if fn := c.onClose.Swap(nil); fn != nil {
		(*fn)()
	}
	return err
}

// setOnClose runs fn once when the connection is closed (the end of an
// intercepted session, which goroutines inside goproxy own).
func (c *clientConn) setOnClose(fn func()) { c.onClose.Store(&fn) }

// listener bounds concurrent connections: at the limit, Accept waits for a
// connection to close, and new clients wait in the kernel's accept queue
// instead of pushing the proxy past what it can hold.
type listener struct {
	net.Listener
	sem     chan struct{}
	waiting *atomic.Int64
	closed  chan struct{}
	once    sync.Once
}

func newListener(ln net.Listener, sem chan struct{}, waiting *atomic.Int64) *listener {
	return &listener{Listener: ln, sem: sem, waiting: waiting, closed: make(chan struct{})}
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	l.waiting.Add(1) // a slot held for a connection not accepted yet
	c, err := l.Listener.Accept()
	l.waiting.Add(-1)
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &clientConn{Conn: framing.NewConn(c), release: func() { <-l.sem }}, nil
}

func (l *listener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// newID returns a request id: a per-process random prefix and a counter, in
// hex. Short enough to read out over the phone to a helpdesk.
func (s *Server) newID() string {
	n := s.idSeq.Add(1)
	var buf [17]byte
	copy(buf[:], s.idPrefix)
	buf[8] = '-'
	const hexd = "0123456789abcdef"
	for i := 16; i > 8; i-- {
		buf[i] = hexd[n&15]
		n >>= 4
	}
	return string(buf[:])
}
