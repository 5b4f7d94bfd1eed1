package proxy

import (
	"errors"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/proxy/tunnel"
	"github.com/sekisho/sekisho/rules"
)

// serveConnect decides a CONNECT and, when allowed, relays the tunnel with
// its upload budget. It runs the tunnel on the handler's goroutine, so the
// audit line is written when the tunnel ends.
func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request, st *state) {
	// Any answer but the tunnel ends the connection: the framing scanner
	// stops at a CONNECT head (what follows is a tunnel's bytes), so a
	// request after a refused CONNECT would not be checked.
	w.Header().Set("Connection", "close")
	st.mode = metrics.ModeTunnel
	f := &st.facts
	f.Stream = true
	f.Body.FileParts, f.Body.PartsComplete = rules.TriNo, true
	host, port, err := rules.SplitHostPort(r.Host, 0)
	if err != nil {
		s.refuse(w, r, st, http.StatusBadRequest, metrics.ReasonBadRequest, err.Error())
		return
	}
	f.Host, f.Port = host, port
	if pages.IsSelftestHost(host) {
		s.selftestConnect(w, r, st) // answered by sekisho: never resolved or dialed
		return
	}
	if denied := s.resolve(r.Context(), st); denied != nil {
		st.err = denied
		s.refuse(w, r, st, http.StatusForbidden, metrics.ReasonDestinationDenied, denied.Error())
		return
	}
	s.decide(st)
	d := st.decision
	if s.issuer != nil {
		st.inspection = st.set.Inspect(f)
	}
	if st.inspection.Inspect && st.resolved {
		// Opened: each request inside is decided on its own. A blocked
		// destination is opened too, so that the browser shows the block
		// page instead of a connection error.
		s.serveInspected(w, r, st)
		return
	}
	if d.Blocks() {
		st.status = http.StatusForbidden
		ct, body := pages.RenderBlock(s.blockInfo(st), pages.WantsJSON(r.Header.Get("Accept")))
		writeBody(w, http.StatusForbidden, ct, body, st.id)
		return
	}
	if !st.resolved {
		s.metrics.Errors.WithLabelValues(metrics.ReasonResolve).Inc()
		p := problemFor(http.StatusBadGateway, metrics.ReasonResolve, st.err.Error())
		st.status, st.reason = p.Status, metrics.ReasonResolve
		p.RequestID, p.Host, p.Helpdesk = st.id, f.Host, s.helpdesk()
		s.writeProblem(w, r, p, false)
		return
	}
	upstream, err := s.dialer.Dial(r.Context(), st.target.Addr)
	if err != nil {
		status, reason := upstreamFailure(err)
		s.metrics.Errors.WithLabelValues(reason).Inc()
		st.status, st.reason, st.err = status, reason, err
		p := problemFor(status, reason, err.Error())
		p.RequestID, p.Host, p.Helpdesk = st.id, f.Host, s.helpdesk()
		s.writeProblem(w, r, p, false)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		_ = upstream.Close()
		s.refuse(w, r, st, http.StatusBadRequest, metrics.ReasonUnsupportedRequest, "CONNECT over this protocol is not supported")
		return
	}
	// Track the tunnel before the hijack, so that a Shutdown starting now
	// cannot miss it (net/http forgets the connection at the hijack).
	var clientConn atomic.Pointer[net.Conn]
	untrack := s.trackTunnel(func() {
		_ = upstream.Close()
		if c := clientConn.Load(); c != nil {
			_ = (*c).Close()
		}
	})
	handedOff := false
	defer func() {
		if !handedOff {
			untrack()
		}
	}()
	conn, rw, err := hj.Hijack()
	if err != nil {
		_ = upstream.Close()
		st.err = err
		return
	}
	clientConn.Store(&conn)
	if s.shutting.Load() {
		_ = upstream.Close()
		_ = conn.Close()
		st.err = errors.New("shutting down")
		return
	}
	// Bytes the client sent right after its CONNECT (a TLS ClientHello in
	// the same packet) are in the HTTP parser's buffer: they go first, and
	// count against the budget.
	var prefix []byte
	if n := rw.Reader.Buffered(); n > 0 {
		b, _ := rw.Reader.Peek(n)
		prefix = append([]byte(nil), b...)
	}
	st.status = http.StatusOK
	st.budget = d.Budget
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		_ = upstream.Close()
		_ = conn.Close()
		st.err = err
		return
	}
	client, ok := bareTCP(conn)
	if !ok {
		_ = upstream.Close()
		_ = conn.Close()
		st.err = errors.New("client connection is not TCP")
		return
	}
	// The tunnel runs on its own goroutine and the handler returns, so that
	// net/http lets go of the connection's buffers and the handler's deep
	// stack: an idle tunnel then costs its two sockets, two small goroutines
	// and a few structs. The record is finished when the tunnel ends.
	s.metrics.ActiveTunnels.WithLabelValues(metrics.ModeTunnel).Inc()
	st.rc = nil // the ResponseController would keep net/http's response alive
	st.deferFinish = true
	handedOff = true
	go s.runTunnel(st, client, upstream, prefix, conn, untrack)
}

// runTunnel relays an allowed, hijacked CONNECT until it ends, then writes
// its record.
func (s *Server) runTunnel(st *state, client *net.TCPConn, upstream *net.TCPConn, prefix []byte, conn net.Conn, untrack func()) {
	d := st.decision
	res := tunnel.Run(client, upstream, prefix, d.Budget, !d.ReportOnly, conn.Close)
	untrack()
	s.metrics.ActiveTunnels.WithLabelValues(metrics.ModeTunnel).Dec()
	st.up.Store(res.Up)
	st.down.Store(res.Down)
	if res.BudgetExceeded {
		st.budgetExceeded.Store(true)
		st.reason = "upload_budget_exceeded"
	}
	if res.Err != nil {
		st.err = res.Err
	}
	s.finish(st)
}

// bareTCP finds the *net.TCPConn under the accepted connection, so that
// the tunnel's copies can splice.
func bareTCP(c net.Conn) (*net.TCPConn, bool) {
	for {
		switch t := c.(type) {
		case *net.TCPConn:
			return t, true
		case *clientConn:
			c = t.Conn.NetConn()
		case interface{ NetConn() net.Conn }:
			c = t.NetConn()
		default:
			return nil, false
		}
	}
}

func writeBody(w http.ResponseWriter, status int, ct string, body []byte, id string) {
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", pages.PageCSP)
	h.Set("X-Sekisho-Request-Id", id)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
