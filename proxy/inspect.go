package proxy

import (
	"container/list"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/rules"
)

// tunnelState is an intercepted CONNECT: where it was decided to go, and
// the record of the session. Every request read inside it is decided on
// its own (onRequest), but goes only to this tunnel's pinned address.
type tunnelState struct {
	connect *state // the CONNECT's record, finished when the session ends
	host    string // normalised CONNECT target
	port    uint16
	target  dial.Target
	conn    *clientConn

	mu      sync.Mutex
	started bool // the first request inside was read: it owns the deadlines
}

type tunnelKey struct{}

// serveInspected opens an allowed (or blocked, to show the page) CONNECT
// with sekisho's CA. goproxy terminates the client's TLS and reads the
// requests inside; each goes through onRequest like a plain request.
func (s *Server) serveInspected(w http.ResponseWriter, r *http.Request, st *state) {
	st.mode = metrics.ModeInspected
	st.status = http.StatusOK
	ts := &tunnelState{connect: st, host: st.facts.Host, port: st.facts.Port, target: st.target, conn: st.conn}
	if st.conn == nil {
		s.refuse(w, r, st, http.StatusBadRequest, metrics.ReasonUnsupportedRequest, "interception needs a plain TCP client connection")
		return
	}
	// The session outlives this handler: goproxy serves it on its own
	// goroutine. Its record is finished, and the tunnel untracked, when the
	// client connection closes.
	st.deferFinish = true
	s.metrics.ActiveTunnels.WithLabelValues(metrics.ModeInspected).Inc()
	untrack := s.trackTunnel(func() { _ = st.conn.Close() })
	st.conn.setOnClose(func() {
		untrack()
		s.metrics.ActiveTunnels.WithLabelValues(metrics.ModeInspected).Dec()
		s.finish(st)
	})
	s.gp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), tunnelKey{}, ts)))
	// The client has ReadHeaderTimeout for its TLS handshake and first
	// request (innerState clears it). Set only now: goproxy hijacks the
	// connection, which clears every deadline, and then serves the
	// session on a goroutine of its own, which may have read the first
	// request already.
	ts.mu.Lock()
	if !ts.started {
		_ = st.conn.SetReadDeadline(time.Now().Add(s.limits.ReadHeaderTimeout))
	}
	ts.mu.Unlock()
}

// onConnect is goproxy's CONNECT handler. It is reached only through
// serveInspected, which has decided already: it always intercepts.
func (s *Server) onConnect(host string, ctx *goproxy.ProxyCtx) (*goproxy.ConnectAction, string) {
	ts, _ := ctx.Req.Context().Value(tunnelKey{}).(*tunnelState)
	if ts == nil || s.issuer == nil {
		return goproxy.RejectConnect, host
	}
	ctx.UserData = ts
	return &goproxy.ConnectAction{Action: goproxy.ConnectMitm, TLSConfig: s.clientTLSConfig(ts)}, host
}

// clientTLSConfig is the TLS server side of an intercepted tunnel: a leaf
// for the CONNECT target, and a refusal of a ClientHello whose SNI names
// another host (domain fronting).
func (s *Server) clientTLSConfig(ts *tunnelState) func(string, *goproxy.ProxyCtx) (*tls.Config, error) {
	return func(string, *goproxy.ProxyCtx) (*tls.Config, error) {
		return &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
			GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
				if hello.ServerName == "" {
					return nil, nil
				}
				sni, err := rules.NormalizeHost(hello.ServerName)
				if err != nil || sni != ts.host {
					st := ts.connect
					st.reason = metrics.ReasonDomainFronting
					st.err = fmt.Errorf("TLS SNI %q does not match the CONNECT target %q", hello.ServerName, ts.host)
					s.metrics.Refused.WithLabelValues(metrics.ReasonDomainFronting).Inc()
					return nil, st.err
				}
				return nil, nil
			},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return s.issuer.Certificate(ts.host)
			},
		}, nil
	}
}

// innerState starts the record of a request read inside an intercepted
// tunnel.
func (s *Server) innerState(ts *tunnelState, req *http.Request) *state {
	c := ts.connect
	st := &state{
		id:        s.newID(),
		start:     time.Now(),
		set:       s.rules.Load(),
		mode:      metrics.ModeInspected,
		client:    c.client,
		tunnel:    ts,
		rc:        ts.conn,
		scheme:    req.URL.Scheme,
		writeIdle: s.limits.WriteIdleTimeout,
	}
	st.facts.Client = c.facts.Client
	st.facts.Method = req.Method
	st.facts.Body.PartTypes = st.partTypes[:0]
	// The headers are in; what follows has its own deadlines.
	ts.mu.Lock()
	ts.started = true
	_ = ts.conn.SetReadDeadline(time.Time{})
	_ = ts.conn.SetWriteDeadline(time.Time{})
	ts.mu.Unlock()
	return st
}

// tlsTransports keeps one http.Transport per (server name, pinned address),
// so that a pooled connection, verified for one name, is never reused for
// another name on the same address, and never goes to another address
// than the one decided on. Bounded: the least recently used is closed.
type tlsTransports struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of *tlsTransportEntry, most recent first
	index map[tlsTransportKey]*list.Element
}

type tlsTransportKey struct {
	host string
	addr netip.AddrPort
}

type tlsTransportEntry struct {
	key tlsTransportKey
	tr  *http.Transport
}

// tlsTransport returns the transport for host at the pinned addr.
func (s *Server) tlsTransport(host string, addr netip.AddrPort) *http.Transport {
	t := &s.tlsTrs
	key := tlsTransportKey{host, addr}
	t.mu.Lock()
	defer t.mu.Unlock()
	if el, ok := t.index[key]; ok {
		t.lru.MoveToFront(el)
		return el.Value.(*tlsTransportEntry).tr
	}
	tlsCfg := s.upstreamTLS.Clone()
	tlsCfg.ServerName = host
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return s.dialer.Dial(ctx, addr) // the pinned address, whatever the name
		},
		TLSClientConfig: tlsCfg,
		// HTTP/1.1 upstream: a pool of kept-alive connections. With HTTP/2
		// every request to a host would share one connection, whose single
		// reader caps throughput (measured: warm intercepted handshakes ran
		// at half the cold rate).
		ForceAttemptHTTP2:      false,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConnsPerHost:    s.limits.MaxIdleConnsPerHost,
		IdleConnTimeout:        90 * time.Second,
		ResponseHeaderTimeout:  s.limits.ResponseHeaderTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 256 << 10,
	}
	t.index[key] = t.lru.PushFront(&tlsTransportEntry{key: key, tr: tr})
	for t.lru.Len() > t.max {
		old := t.lru.Back()
		t.lru.Remove(old)
		e := old.Value.(*tlsTransportEntry)
		delete(t.index, e.key)
		e.tr.CloseIdleConnections()
	}
	return tr
}

func (t *tlsTransports) closeIdle() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for el := t.lru.Front(); el != nil; el = el.Next() {
		el.Value.(*tlsTransportEntry).tr.CloseIdleConnections()
	}
}
