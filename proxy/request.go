package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/elazarl/goproxy"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/proxy/h1client"
	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/proxy/upload"
	"github.com/sekisho/sekisho/rules"
)

// resolve resolves and geolocates the destination in st.facts (Host, Port
// set) and pins the address. It returns an error only for a denied
// destination, which is refused whatever the rules say; an unresolvable
// name leaves the country unknown, which the rules treat as foreign.
func (s *Server) resolve(ctx context.Context, st *state) (denied error) {
	f := &st.facts
	set := st.set
	t, err := s.dialer.Resolve(ctx, f.Host, f.Port, func(loc geo.Location) int {
		switch set.Classify(loc.Country) {
		case rules.Domestic:
			return 0
		case rules.Internal:
			return 1
		case rules.Foreign:
			return 2
		}
		return 3
	})
	st.target = t
	switch {
	case errors.Is(err, dial.ErrDenied):
		st.resolved = t.Addr.IsValid()
		return err
	case err != nil:
		// An upload is decided (and blocked) on the unknown country;
		// anything else gets a 502 after the decision.
		st.err = err
		f.Country = geo.CountryUnknown
	default:
		st.resolved = true
		f.Addr = t.Addr.Addr()
		f.Country = t.Location.Country
	}
	return nil
}

// decide prepares the facts and decides on what the headers say.
func (s *Server) decide(st *state) {
	st.set.Prepare(&st.facts)
	st.decision = st.set.Decide(&st.facts)
	st.decided = true
}

// onRequest decides a proxied HTTP request (goproxy request handler): a
// plain one from ServeHTTP, or one inside an intercepted tunnel — one code
// path for both. It returns a response to answer instead of forwarding (a
// block page, a refusal), or the request rewritten to go to exactly the
// address that was geolocated.
func (s *Server) onRequest(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
	st := stateFrom(req.Context())
	var ts *tunnelState
	if st == nil {
		ts, _ = ctx.UserData.(*tunnelState)
		if ts == nil {
			return req, s.problemResponse(req, &state{id: s.newID()}, problemFor(http.StatusInternalServerError, metrics.ReasonUnsupportedRequest, "request without proxy state"))
		}
		st = s.innerState(ts, req)
	}
	ctx.UserData = st
	f := &st.facts
	authority := req.Host
	defPort := uint16(80)
	if req.URL.Scheme == "https" {
		defPort = 443
	}
	host, port, err := rules.SplitHostPort(req.URL.Host, defPort)
	if err != nil {
		return req, s.refuseResponse(req, st, http.StatusBadRequest, metrics.ReasonBadRequest, err.Error())
	}
	f.Host, f.Port = host, port
	f.Path = rules.CleanPath(req.URL.Path)
	if len(req.Header["Content-Type"]) > 1 {
		return req, s.refuseResponse(req, st, http.StatusBadRequest, metrics.ReasonBadRequest,
			"more than one Content-Type header: which one the server uses is not known")
	}
	// A WebSocket handshake is a GET without a body (RFC 6455 §4.1). Anything
	// else carrying the upgrade headers is decided as the ordinary request it
	// is, and loses them: otherwise "Upgrade: websocket" on a POST would turn
	// an upload into a stream that body rules do not see.
	websocket := isWebSocket(req.Header) && req.Method == http.MethodGet &&
		req.ContentLength == 0 && len(req.TransferEncoding) == 0
	if websocket {
		f.Stream = true
		if ts == nil {
			st.mode = metrics.ModeWebSocket
		}
	}
	upload.Classify(req.Header, req.ContentLength, req.TransferEncoding, &f.Body)

	if pages.IsSelftestHost(host) && (ts == nil || (host == ts.host && port == ts.port)) {
		// Answered by sekisho: never resolved or dialed.
		return req, s.selftestResponse(req, st)
	}
	if ts == nil {
		if denied := s.resolve(req.Context(), st); denied != nil {
			st.err = denied
			return req, s.refuseResponse(req, st, http.StatusForbidden, metrics.ReasonDestinationDenied, denied.Error())
		}
		s.decide(st)
	} else {
		// Inside a tunnel the request goes where the tunnel was decided to
		// go, or nowhere: a Host (or absolute-form target) for another
		// site is domain fronting.
		if host != ts.host || port != ts.port {
			st.err = fmt.Errorf("the request inside the tunnel to %s is for %s", net.JoinHostPort(ts.host, strconv.Itoa(int(ts.port))), net.JoinHostPort(host, strconv.Itoa(int(port))))
			return req, s.refuseResponse(req, st, http.StatusForbidden, metrics.ReasonDomainFronting, st.err.Error())
		}
		st.target, st.resolved = ts.target, true
		f.Addr, f.Country = ts.target.Addr.Addr(), ts.target.Location.Country
		s.decide(st)
		if ts.connect.decision.Blocks() {
			// The whole destination is blocked; the tunnel was opened only
			// to show the page.
			st.decision = ts.connect.decision
		}
	}
	if st.decision.NeedBody {
		if resp := s.holdBody(req, st); resp != nil {
			return req, resp
		}
	}
	if st.decision.Blocks() {
		st.status = http.StatusForbidden
		return req, s.blockResponse(req, st)
	}
	if !st.resolved {
		s.metrics.Errors.WithLabelValues(metrics.ReasonResolve).Inc()
		p := problemFor(http.StatusBadGateway, metrics.ReasonResolve, st.err.Error())
		st.status, st.reason = p.Status, metrics.ReasonResolve
		return req, s.problemResponse(req, st, p)
	}

	// Allowed: send it to the address that was decided on, and count.
	if st.held != nil {
		req.Body = &heldBody{held: st.held, rest: req.Body, st: st, idle: s.limits.BodyIdleTimeout}
		st.held = nil // the body owns the buffer now; Close releases it
	} else if req.Body != nil && req.Body != http.NoBody {
		req.Body = &reqBody{rc: req.Body, st: st, idle: s.limits.BodyIdleTimeout}
	}
	if req.URL.Scheme != "https" {
		// Plain HTTP: the transport's pool is keyed by the pinned address.
		req.URL.Host = st.target.Addr.String()
	} // https keeps its name for SNI; its transport dials the pinned address
	req.Host = authority
	removeHopByHop(req.Header, websocket)
	req.Header.Del("X-Forwarded-For") // never tell a foreign server who inside sent it
	ctx.RoundTripper = s.rt
	// The client's "Connection: close" is about its own connection: the
	// upstream one stays in the pool (net/http would close it after this
	// request). A shallow copy, so that goproxy still sees the client's wish.
	out := *req
	out.Close = false
	return &out, nil
}

// holdBody reads a bounded prefix of the body when a rule needs to see
// into it, then decides again with Final set. It returns a response when
// the body cannot be read.
func (s *Server) holdBody(req *http.Request, st *state) *http.Response {
	s.metrics.HeldBodies.Inc()
	f := &st.facts
	if req.Body != nil && req.Body != http.NoBody {
		deadline := time.Now().Add(s.limits.BodyIdleTimeout)
		_ = st.rc.SetReadDeadline(deadline)
		held, err := upload.Hold(req.Body, s.limits.HoldBodyBytes)
		_ = st.rc.SetReadDeadline(time.Time{})
		st.held = held
		if err != nil {
			st.err = err
			return s.refuseResponse(req, st, http.StatusBadRequest, metrics.ReasonBadRequest, "cannot read the request body: "+err.Error())
		}
		upload.Update(&f.Body, held, upload.Boundary(req.Header.Get("Content-Type")))
	}
	f.Final = true
	st.decision = st.set.Decide(f)
	return nil
}

// roundTrip sends an allowed request upstream (goproxy RoundTripper) and
// wraps the response body to count it, bound slow clients, and finish the
// request's record when the body is closed; a WebSocket upgrade gets the
// stream body that enforces the upload budget. It never returns an error:
// a failure becomes the 502/504 page, so that every path (plain, inside a
// tunnel, HTTP/2) answers and records it the same way.
func (s *Server) roundTrip(req *http.Request, ctx *goproxy.ProxyCtx) (*http.Response, error) {
	st, _ := ctx.UserData.(*state)
	if st == nil {
		return s.tr.RoundTrip(req)
	}
	var resp *http.Response
	var err error
	tlsName := "" // the name the upstream certificate must be valid for
	if req.URL.Scheme == "https" {
		tlsName = st.facts.Host
	}
	if h1client.Eligible(req) {
		resp, err = s.h1.RoundTrip(req, st.target.Addr, tlsName)
	} else if tlsName != "" {
		resp, err = s.tlsTransport(tlsName, st.target.Addr).RoundTrip(req)
	} else {
		resp, err = s.tr.RoundTrip(req)
	}
	if err != nil {
		return s.upstreamFailure(req, st, err), nil
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok && st.facts.Stream {
			mode := st.mode
			s.metrics.ActiveTunnels.WithLabelValues(mode).Inc()
			st.upgraded.Store(true)
			untrack := s.trackTunnel(func() {
				_ = rwc.Close()
				if st.conn != nil {
					_ = st.conn.Close() // goproxy's copy from the client blocks on it
				}
				if st.tunnel != nil {
					_ = st.tunnel.conn.Close()
				}
			})
			st.budget = st.decision.Budget
			resp.Body = &streamBody{rwc: rwc, st: st, budget: st.decision.Budget, enforce: !st.decision.ReportOnly, onClose: func() {
				untrack()
				s.metrics.ActiveTunnels.WithLabelValues(mode).Dec()
				s.finish(st)
			}}
			return resp, nil
		}
		_ = resp.Body.Close()
		return s.upstreamFailure(req, st, errors.New("upstream switched to a protocol other than the WebSocket the client asked for")), nil
	}
	removeHopByHop(resp.Header, false)
	resp.Body = &respBody{rc: resp.Body, st: st, idle: s.limits.WriteIdleTimeout, onClose: func() { s.finish(st) }}
	return resp, nil
}

// StatusClientClosed is the status recorded for a request whose client
// went away before the answer (nginx's 499): no such answer is sent.
const StatusClientClosed = 499

// upstreamFailure is the answer to a request that failed upstream.
func (s *Server) upstreamFailure(req *http.Request, st *state, err error) *http.Response {
	if req.Context().Err() != nil {
		// The client is gone: nobody reads this answer, and the upstream
		// did nothing wrong.
		st.status, st.reason, st.err = StatusClientClosed, metrics.ReasonClientClosed, err
		return s.problemResponse(req, st, problemFor(http.StatusBadGateway, metrics.ReasonUpstream, err.Error()))
	}
	status, reason := upstreamFailure(err)
	s.metrics.Errors.WithLabelValues(reason).Inc()
	st.status, st.reason, st.err = status, reason, err
	return s.problemResponse(req, st, problemFor(status, reason, err.Error()))
}

// onResponse turns a failed upstream exchange into a clear error page and
// records the status (goproxy response handler).
func (s *Server) onResponse(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	st, _ := ctx.UserData.(*state)
	if st == nil {
		return resp
	}
	if resp == nil {
		status, reason := upstreamFailure(ctx.Error)
		s.metrics.Errors.WithLabelValues(reason).Inc()
		detail := "no response"
		if ctx.Error != nil {
			detail = ctx.Error.Error()
			st.err = ctx.Error
		}
		st.status, st.reason = status, reason
		return s.problemResponse(ctx.Req, st, problemFor(status, reason, detail))
	}
	if st.status == 0 {
		st.status = resp.StatusCode
	}
	return resp
}

func upstreamFailure(err error) (int, string) {
	var ne interface{ Timeout() bool }
	var certErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var recErr tls.RecordHeaderError
	switch {
	case err == nil:
		return http.StatusBadGateway, metrics.ReasonUpstream
	case errors.As(err, &certErr), errors.As(err, &alert), errors.As(err, &recErr),
		strings.Contains(err.Error(), "tls: "), strings.Contains(err.Error(), "x509: "):
		return http.StatusBadGateway, metrics.ReasonUpstreamTLS
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return http.StatusGatewayTimeout, metrics.ReasonTimeout
	case errors.Is(err, dial.ErrDenied):
		return http.StatusForbidden, metrics.ReasonDestinationDenied
	case strings.Contains(err.Error(), "dial tcp"), strings.Contains(err.Error(), "connection refused"):
		return http.StatusBadGateway, metrics.ReasonDial
	}
	return http.StatusBadGateway, metrics.ReasonUpstream
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func isWebSocket(h http.Header) bool {
	return headerHasToken(h, "Connection", "upgrade") && headerHasToken(h, "Upgrade", "websocket")
}

// hopHeaders are meaningful for one connection only (RFC 9110 §7.6.1) and
// are not forwarded.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopByHop deletes the hop-by-hop headers and those the Connection
// header names. keepUpgrade keeps Connection and Upgrade for a WebSocket
// handshake.
func removeHopByHop(h http.Header, keepUpgrade bool) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" || (keepUpgrade && strings.EqualFold(name, "Upgrade")) {
				continue
			}
			h.Del(name)
		}
	}
	for _, name := range hopHeaders {
		if keepUpgrade && (name == "Connection" || name == "Upgrade") {
			continue
		}
		h.Del(name)
	}
	if keepUpgrade {
		h.Set("Connection", "Upgrade")
	}
}

// reqBody counts a request body on its way upstream and gives the client a
// deadline for each pause while sending it.
type reqBody struct {
	rc   io.ReadCloser
	st   *state
	idle time.Duration
}

func (b *reqBody) Read(p []byte) (int, error) {
	return readWithIdle(b.rc, p, b.st, b.idle)
}

// readWithIdle reads a request body with a deadline for this read, and
// clears it when the body is complete: a deadline left behind would fire in
// net/http's background read while the upstream is still answering, and
// cancel the request.
func readWithIdle(r io.Reader, p []byte, st *state, idle time.Duration) (int, error) {
	live := !st.done.Load() && st.rc != nil
	if live {
		_ = st.rc.SetReadDeadline(time.Now().Add(idle))
	}
	n, err := r.Read(p)
	st.up.Add(int64(n))
	if err == io.EOF && live && !st.done.Load() {
		// Not once the request is finished: finish has set the deadline
		// for the next request (the upstream may answer before it has
		// read the whole body).
		_ = st.rc.SetReadDeadline(time.Time{})
	} // after a timeout the deadline stays past: the connection is done for
	return n, err
}

func (b *reqBody) Close() error { return b.rc.Close() }

// heldBody replays the held prefix, then the rest of the body. The pooled
// buffer is released on Close: the transport may read a request body until
// it closes it, even after RoundTrip has returned.
type heldBody struct {
	held *upload.Held
	off  int
	rest io.ReadCloser
	st   *state
	idle time.Duration
	once sync.Once
	mu   sync.Mutex
}

func (b *heldBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.held == nil {
		b.mu.Unlock()
		return 0, errors.New("read after close")
	}
	if b.off < len(b.held.Data) {
		n := copy(p, b.held.Data[b.off:])
		b.off += n
		b.mu.Unlock()
		b.st.up.Add(int64(n))
		return n, nil
	}
	eof := b.held.EOF
	b.mu.Unlock()
	if eof || b.rest == nil {
		return 0, io.EOF
	}
	return readWithIdle(b.rest, p, b.st, b.idle)
}

func (b *heldBody) Close() error {
	var err error
	b.once.Do(func() {
		if b.rest != nil {
			err = b.rest.Close()
		}
		b.mu.Lock()
		b.held.Release()
		b.held = nil
		b.mu.Unlock()
	})
	return err
}

// respBody counts a response body on its way to the client, gives the
// client a deadline to accept each chunk, and finishes the record on Close.
type respBody struct {
	rc      io.ReadCloser
	st      *state
	idle    time.Duration
	onClose func()
	once    sync.Once
}

func (b *respBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	b.st.down.Add(int64(n))
	if n > 0 && !b.st.done.Load() && b.st.rc != nil {
		_ = b.st.rc.SetWriteDeadline(time.Now().Add(b.idle))
	}
	return n, err
}

func (b *respBody) Close() error {
	err := b.rc.Close()
	if b.onClose != nil {
		b.once.Do(b.onClose)
	}
	return err
}

// streamBody is the upstream side of an upgraded connection (WebSocket).
// goproxy copies client bytes into Write: they are counted against the
// upload budget, and a write that would exceed it is refused whole — none
// of its bytes reach the upstream socket.
type streamBody struct {
	rwc     io.ReadWriteCloser
	st      *state
	budget  int64
	enforce bool
	onClose func()
	once    sync.Once
}

func (b *streamBody) Read(p []byte) (int, error) {
	n, err := b.rwc.Read(p)
	b.st.down.Add(int64(n))
	return n, err
}

var errBudget = errors.New("upload budget exceeded")

func (b *streamBody) Write(p []byte) (int, error) {
	if b.budget >= 0 && b.st.up.Load()+int64(len(p)) > b.budget {
		b.st.budgetExceeded.Store(true)
		if b.enforce {
			_ = b.rwc.Close()
			return 0, errBudget
		}
	}
	n, err := b.rwc.Write(p)
	b.st.up.Add(int64(n))
	return n, err
}

func (b *streamBody) Close() error {
	err := b.rwc.Close()
	b.once.Do(b.onClose)
	return err
}
