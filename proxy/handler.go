package proxy

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/proxy/framing"
	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/proxy/upload"
	"github.com/sekisho/sekisho/rules"
)

var sprintf = fmt.Sprintf

type stateKey struct{}

// state is everything sekisho knows about one request or tunnel, from
// accept to the audit line. It travels in the request context (goproxy's
// handlers reach it through ctx.UserData).
type state struct {
	id     string
	start  time.Time
	client netip.AddrPort
	set    *rules.Set // loaded once per request
	conn   *clientConn
	// rc sets the client connection's deadlines: the ResponseController of
	// a plain request, the raw connection under an intercepted tunnel.
	rc deadlines
	// tunnel is the intercepted tunnel a request came through (nil for
	// plain requests and for the CONNECT itself).
	tunnel *tunnelState
	// inspection is the CONNECT's interception decision.
	inspection rules.Inspection
	// deferFinish: the record is finished when the session ends, not when
	// the handler returns (an intercepted CONNECT).
	deferFinish bool
	// closeAfter: sekisho's own answer closes the client connection.
	closeAfter bool

	facts     rules.Facts
	partTypes [16]string
	decision  rules.Decision
	decided   bool
	target    dial.Target
	resolved  bool
	held      *upload.Held

	mode   string
	scheme string
	status int
	reason string
	err    error

	up, down       atomic.Int64
	budget         int64
	budgetExceeded atomic.Bool
	upgraded       atomic.Bool // goproxy took the connection over (101)
	done           atomic.Bool
	writeIdle      time.Duration
}

// deadlines is what sets a client connection's deadlines.
type deadlines interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

func stateFrom(ctx context.Context) *state {
	st, _ := ctx.Value(stateKey{}).(*state)
	return st
}

// ServeHTTP is the front door: framing check, client check, then CONNECT,
// a request for sekisho itself, or a request to proxy.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	st := &state{
		id:    s.newID(),
		start: time.Now(),
		set:   s.rules.Load(),
		mode:  metrics.ModeHTTP,
		rc:    http.NewResponseController(w),
	}
	st.writeIdle = s.limits.WriteIdleTimeout
	// A write deadline left by the previous request on this connection
	// (see finish) must not cut this one short.
	_ = st.rc.SetWriteDeadline(time.Time{})
	st.client, _ = netip.ParseAddrPort(r.RemoteAddr)
	st.facts.Client = st.client.Addr().Unmap()
	st.facts.Method = r.Method
	st.facts.Body.PartTypes = st.partTypes[:0]
	defer func() {
		if !st.deferFinish {
			s.finish(st)
		}
	}()
	if cc, ok := r.Context().Value(connKey{}).(*clientConn); ok {
		st.conn = cc
		if p := cc.Next(); p != framing.None {
			s.refuse(w, r, st, http.StatusBadRequest, metrics.ReasonAmbiguousFraming, p.String())
			return
		}
	}

	if r.Method != http.MethodConnect && !r.URL.IsAbs() && isPACPath(r.URL.Path) {
		s.serveLocal(w, r, st) // the PAC file, to any client (see serveLocal)
		return
	}
	if !s.clientAllowed(st.facts.Client) {
		s.refuse(w, r, st, http.StatusForbidden, metrics.ReasonClientNotAllowed, "client address is not in an allowed network")
		return
	}
	if r.Method == http.MethodConnect {
		s.serveConnect(w, r, st)
		return
	}
	if !r.URL.IsAbs() {
		s.serveLocal(w, r, st)
		return
	}
	st.scheme = r.URL.Scheme
	if r.URL.Scheme != "http" {
		s.refuse(w, r, st, http.StatusBadRequest, metrics.ReasonUnsupportedRequest,
			"scheme "+strconv.Quote(r.URL.Scheme)+" is not proxied as plain HTTP; HTTPS goes through CONNECT")
		return
	}
	if s.isSelf(r.URL.Host) {
		s.serveLocal(w, r, st) // "GET http://proxy1:3128/selftest" through a fixed proxy setting
		return
	}
	s.gp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), stateKey{}, st)))
	if st.upgraded.Load() && st.conn != nil {
		// goproxy hijacked the client connection for the WebSocket and
		// returns when one direction ends; the connection is ours to close.
		_ = st.conn.Close()
	}
}

func (s *Server) clientAllowed(a netip.Addr) bool {
	for _, p := range s.allowed {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refuse answers a request that is not served at all (bad framing, client
// not allowed, malformed) and records it. The connection is closed after
// the answer: whatever follows on it cannot be trusted.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, st *state, status int, reason, detail string) {
	s.metrics.Refused.WithLabelValues(reason).Inc()
	st.status, st.reason = status, reason
	if st.err == nil && detail != "" {
		st.err = fmt.Errorf("%s", detail)
	}
	p := problemFor(status, reason, detail)
	p.RequestID = st.id
	p.Host = st.facts.Host
	p.Helpdesk = s.helpdesk()
	s.writeProblem(w, r, p, true)
}

// finish writes the audit line and updates the metrics, once per request.
func (s *Server) finish(st *state) {
	if st.done.Swap(true) {
		return
	}
	if st.held != nil {
		st.held.Release()
		st.held = nil
	}
	if st.rc != nil && !st.upgraded.Load() && st.mode != metrics.ModeTunnel && !st.deferFinish {
		// net/http flushes a small response after the handler returns: it
		// too must finish in time, or a client that never reads would hold
		// the connection forever. The next request clears the deadline.
		_ = st.rc.SetWriteDeadline(time.Now().Add(st.writeIdle))
		if st.tunnel != nil {
			// Inside a tunnel, the next request's headers must come within
			// the idle timeout (goproxy's loop has no deadline of its own).
			// After an answer that closes the connection (a block, a
			// refusal) there is no next request: goproxy's deferred close
			// of the request body reads on only for rstAvoidanceDelay (it
			// would otherwise take in the whole of a blocked upload), and
			// the connection is closed gracefully. A browser still sending
			// the body and reset instead shows ERR_CONNECTION_RESET, not
			// the block page.
			deadline := time.Now().Add(s.limits.IdleTimeout)
			if st.closeAfter {
				deadline = time.Now().Add(rstAvoidanceDelay)
				st.tunnel.conn.lingerOnClose()
			}
			_ = st.rc.SetReadDeadline(deadline)
		}
	}
	f := &st.facts
	dur := time.Since(st.start)
	rec := audit.Record{
		ID:          st.id,
		Kind:        audit.KindRequest,
		Client:      st.client.String(),
		Method:      f.Method,
		Scheme:      st.scheme,
		Host:        f.Host,
		Port:        f.Port,
		Path:        f.Path,
		Mode:        st.mode,
		Status:      st.status,
		Duration:    dur,
		Reason:      st.reason,
		UploadBytes: st.up.Load(),
		RulesHash:   shortHash(st.set),
	}
	rec.DownloadBytes = st.down.Load()
	if f.Method == http.MethodConnect {
		rec.Kind = audit.KindTunnel
	}
	if f.Method == http.MethodConnect {
		rec.Inspection = st.inspection.Rule // "" when interception is off
	}
	if st.err != nil {
		rec.Error = st.err.Error()
	}
	if st.resolved {
		rec.Addr = st.target.Addr.String()
		rec.ASN = st.target.Location.ASN
	}
	if f.Host != "" && st.decided {
		rec.ClientGroup = f.GroupName()
		rec.Country = f.Country
		rec.Declared = f.Declared
		rec.Effective = f.Effective
		rec.Destination = f.Destination.String()
		rec.Service = f.ServiceName()
		if f.Endpoint != nil {
			rec.Endpoint = f.Endpoint.Name
		}
		d := st.decision
		rec.Rule = d.RuleName()
		rec.Action = d.Action.String()
		rec.WouldBlock = d.WouldBlock()
		rec.FailClosed = d.FailClosed
		rec.Stream = f.Stream
		if f.Stream {
			rec.Budget = d.Budget
			rec.BudgetExceeded = st.budgetExceeded.Load()
		} else {
			rec.BodyBytes = bodyBytes(&f.Body)
			if !f.Body.SizeExact {
				rec.BodyBytesMin = f.Body.Size // what was seen before deciding
			}
			rec.ContentType = f.Body.ContentType
			rec.Encoded = f.Body.Encoded
			if f.Body.Present {
				rec.FileParts = triString(f.Body.FileParts)
				rec.PartTypes = f.Body.PartTypes
				rec.PartsIncomplete = !f.Body.PartsComplete
			}
		}
	} else if st.set != nil {
		rec.ClientGroup = groupName(st.set, st.facts.Client)
	}
	// Metrics first, then the line: whoever sees the line sees the counts.
	defer s.audit.Log(&rec)

	if st.mode == "" || !st.decided {
		return // refused before a decision: counted in sekisho_proxy_refused_total
	}
	if f.Method == http.MethodConnect && st.mode == metrics.ModeInspected {
		return // the session: its requests are counted one by one
	}
	svc, country, group := f.ServiceName(), f.Effective, f.GroupName()
	action := st.decision.Action.String()
	if st.decision.WouldBlock() {
		action = rules.Log.String() // let through, recorded as notable
	}
	m := s.metrics
	m.Requests.WithLabelValues(st.mode, svc, country, action, group).Inc()
	if n := st.up.Load(); n > 0 {
		m.UploadBytes.WithLabelValues(st.mode, svc, country, action, group).Add(float64(n))
	}
	if n := st.down.Load(); n > 0 {
		m.DownloadBytes.WithLabelValues(st.mode, svc, country, action, group).Add(float64(n))
	}
	switch {
	case st.decision.Blocks():
		m.Blocked.WithLabelValues(svc, country, st.decision.RuleName(), group).Inc()
	case st.decision.WouldBlock():
		m.WouldBlock.WithLabelValues(svc, country, st.decision.RuleName(), group).Inc()
	}
	if st.budgetExceeded.Load() {
		m.BudgetCloses.WithLabelValues(svc, country, group).Inc()
	}
	m.Duration.WithLabelValues(st.mode).Observe(dur.Seconds())
}

func shortHash(set *rules.Set) string {
	if set == nil {
		return ""
	}
	h := set.Hash()
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func groupName(set *rules.Set, a netip.Addr) string {
	if g := set.ClientGroup(a); g != nil {
		return g.Name
	}
	return rules.OtherGroup
}

func bodyBytes(b *rules.Body) int64 {
	if !b.Present && b.SizeExact {
		return 0
	}
	if b.SizeExact {
		return b.Size
	}
	return -1
}

func triString(t rules.Tri) string {
	switch t {
	case rules.TriYes:
		return "yes"
	case rules.TriNo:
		return "no"
	}
	return "unknown"
}
