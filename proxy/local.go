package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/rules"
)

// This file is what sekisho answers itself: its pages on the proxy port
// (the PAC file, the start page with the CA certificate, the self-test),
// and the self-test hosts under pages.SelftestDomain, which are never
// resolved or dialed.

// live holds what a configuration reload may change without a restart.
type live struct {
	pac      atomic.Pointer[pages.PAC]
	helpdesk atomic.Pointer[string]
}

// SetPAC replaces the PAC file served on the proxy port (and by ServePAC);
// requests already being answered keep the one they loaded.
func (s *Server) SetPAC(p *pages.PAC) { s.live.pac.Store(p) }

// PAC is the PAC file in force (nil when none is configured).
func (s *Server) PAC() *pages.PAC { return s.live.pac.Load() }

// SetHelpdesk replaces the contact shown on block, error and onboarding
// pages.
func (s *Server) SetHelpdesk(h string) { s.live.helpdesk.Store(&h) }

func (s *Server) helpdesk() string {
	if h := s.live.helpdesk.Load(); h != nil {
		return *h
	}
	return ""
}

// ServePAC serves the PAC file in force: the admin listener's /proxy.pac
// and /wpad.dat.
func (s *Server) ServePAC(w http.ResponseWriter, r *http.Request) {
	p := s.live.pac.Load()
	if p == nil {
		localText(w, http.StatusNotFound, "No PAC file is configured on this sekisho.\nこの sekisho には PAC ファイルが設定されていません。\n")
		return
	}
	p.ServeHTTP(w, r)
}

// reasonSelftest marks the audit lines of self-test requests.
const reasonSelftest = "selftest"

// selftestService and selftestRule name self-test requests in the audit
// log. The upload check is decided by the rules in force like any upload
// and recorded under selftestService; the other checks are answered
// without consulting the rules, as selftestRule.
var (
	selftestService = &rules.Service{Name: "selftest", Title: "sekisho 自己診断 / self-test"}
	selftestRule    = &rules.Rule{Name: "selftest", Action: rules.Allow}
)

func isPACPath(p string) bool {
	for _, x := range pages.PACPaths {
		if p == x {
			return true
		}
	}
	return false
}

// isSelf reports whether an absolute-form request names sekisho itself by
// one of the proxy addresses in the PAC file: a browser with a fixed proxy
// setting sends "GET http://proxy1:3128/selftest" to the proxy.
func (s *Server) isSelf(authority string) bool {
	p := s.live.pac.Load()
	return p != nil && p.IsProxy(authority)
}

// serveLocal answers a request for sekisho itself on the proxy port. The
// PAC file is served to any client (it holds no secret, and a browser
// outside clients.allow that gets it then sees sekisho's clear refusal
// instead of going around the proxy); the rest only to allowed clients.
func (s *Server) serveLocal(w http.ResponseWriter, r *http.Request, st *state) {
	st.mode = ""
	st.facts.Path = rules.CleanPath(r.URL.Path)
	sw := &statusWriter{ResponseWriter: w}
	defer func() { st.status = sw.status }()
	w = sw
	path := r.URL.Path
	if isPACPath(path) {
		s.ServePAC(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		localText(w, http.StatusMethodNotAllowed, "Method not allowed.\n")
		return
	}
	switch path {
	case "/", "/index.html":
		o := &pages.Onboarding{Intercept: s.issuer != nil, PACURL: s.baseURL(r) + "/proxy.pac", Helpdesk: s.helpdesk()}
		if s.issuer != nil {
			ca := s.issuer.CA()
			o.CASubject, o.Fingerprint, o.CANotAfter = ca.Cert.Subject.CommonName, ca.Fingerprint(), ca.Cert.NotAfter
		}
		ct, body := pages.RenderOnboarding(o)
		localPage(w, ct, pages.PageCSP, body)
	case "/selftest":
		ct, body := pages.RenderSelftest(&pages.Selftest{
			Intercept: s.issuer != nil,
			PACURL:    s.baseURL(r) + "/proxy.pac",
			Client:    st.client.Addr().Unmap().String(),
			Helpdesk:  s.helpdesk(),
		})
		localPage(w, ct, pages.SelftestCSP, body)
	case "/ca.crt", "/ca.der":
		if s.issuer == nil {
			localText(w, http.StatusNotFound, "TLS interception is off on this sekisho: there is no CA certificate to install.\n"+
				"この sekisho は TLS 検査が無効のため、インストールする CA 証明書はありません。\n")
			return
		}
		ca := s.issuer.CA()
		body := ca.PEM()
		if path == "/ca.der" {
			body = ca.DER()
		}
		h := w.Header()
		// The type that makes iOS, Android and Firefox offer to install it.
		h.Set("Content-Type", "application/x-x509-ca-cert")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write(body)
		}
	case "/favicon.ico":
		w.Header().Set("Cache-Control", "max-age=86400")
		w.WriteHeader(http.StatusNoContent)
	default:
		localText(w, http.StatusNotFound, "Not found. This is the sekisho proxy; its pages are / (setup), /selftest, /proxy.pac, /ca.crt and /ca.der.\n"+
			"見つかりません。sekisho のページは / （設定方法）、/selftest、/proxy.pac、/ca.crt、/ca.der です。\n")
	}
}

// baseURL is "http://host:port" as the client reached sekisho, for the
// links it is told to configure; the first PAC proxy when the Host header
// is not a plain authority.
func (s *Server) baseURL(r *http.Request) string {
	if host, port, err := rules.SplitHostPort(r.Host, 80); err == nil {
		if port == 80 {
			return "http://" + bracket(host)
		}
		return "http://" + net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	if p := s.live.pac.Load(); p != nil && len(p.Proxies()) > 0 {
		return "http://" + p.Proxies()[0]
	}
	return ""
}

func bracket(host string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]"
	}
	return host
}

func localPage(w http.ResponseWriter, ct, csp string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Content-Security-Policy", csp)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func localText(w http.ResponseWriter, status int, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(text)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(text))
}

// statusWriter remembers the status written, for the audit line.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// selftestFacts prepares the record of a self-test request: a probe, not
// traffic. It is audited (service "selftest", reason "selftest") but not
// counted in the traffic metrics (mode ""), and its destination is
// "unknown" — which the rules treat as foreign — without any lookup.
func (s *Server) selftestFacts(st *state) {
	st.mode = ""
	st.reason = reasonSelftest
	st.facts.Country = geo.CountryUnknown
}

// selftestAnswered records a self-test request that sekisho answers
// without consulting the rules.
func (s *Server) selftestAnswered(st *state) {
	st.set.Prepare(&st.facts)
	st.facts.Service = selftestService
	st.decision = rules.Decision{Action: rules.Allow, Rule: selftestRule, Budget: 0}
	st.decided = true
}

// selftestConnect opens a CONNECT to a self-test host with sekisho's own
// certificate, whatever the inspection rules say: the CA check needs it,
// and the requests inside are answered by selftestResponse. Nothing is
// resolved or dialed. With interception off there is nothing to open.
func (s *Server) selftestConnect(w http.ResponseWriter, r *http.Request, st *state) {
	s.selftestFacts(st)
	s.selftestAnswered(st)
	if s.issuer == nil {
		st.status = http.StatusNotFound
		s.writeProblem(w, r, &pages.Problem{
			Status: http.StatusNotFound, Code: reasonSelftest, RequestID: st.id, Host: st.facts.Host, Helpdesk: s.helpdesk(),
			Title: "Self-test host not available", TitleJA: "自己診断用の宛先は使えません",
			Detail:   "TLS interception is off on this sekisho, so there is no HTTPS self-test.",
			DetailJA: "この sekisho は TLS 検査が無効のため、HTTPS の自己診断はありません。",
		}, true)
		return
	}
	st.inspection = rules.Inspection{Inspect: true, Rule: reasonSelftest}
	s.serveInspected(w, r, st)
}

// selftestResponse answers a request for a self-test host (plain HTTP, or
// inside an opened self-test tunnel) without resolving or dialing:
//
//   - pac-check: 200, proof that the browser sent it to sekisho;
//   - ca-check: the same over HTTPS, proof that the browser trusts the CA;
//   - upload-check: decided by the rules in force as an upload to an
//     unknown (so foreign) destination: the block page (JSON for the
//     script), or a 200 saying it would have been let through.
//
// Every answer carries CORS headers: the self-test page on the proxy's own
// origin reads them.
func (s *Server) selftestResponse(req *http.Request, st *state) *http.Response {
	s.selftestFacts(st)
	f := &st.facts
	label := strings.TrimSuffix(f.Host, "."+pages.SelftestDomain)
	var resp *http.Response
	switch {
	case req.Method == http.MethodOptions:
		s.selftestAnswered(st)
		st.status = http.StatusNoContent
		resp = s.finishing(st, s.response(req, http.StatusNoContent, "text/plain; charset=utf-8", nil, st.id, f.Body.Present))
		h := resp.Header
		h.Set("Access-Control-Allow-Methods", "GET, POST")
		h.Set("Access-Control-Allow-Headers", "Accept, Content-Type")
		h.Set("Access-Control-Allow-Private-Network", "true")
		h.Set("Access-Control-Max-Age", "600")
	case label == "upload-check":
		s.decide(st)
		if st.decision.NeedBody {
			if r := s.holdBody(req, st); r != nil {
				resp = r
				break
			}
		}
		f.Service = selftestService // decided as any upload; recorded as the self-test
		if st.decision.Blocks() {
			st.status = http.StatusForbidden
			resp = s.blockResponse(req, st)
			break
		}
		// Not blocked by the rules: say so. It goes nowhere.
		resp = s.selftestJSON(req, st, http.StatusOK, map[string]any{
			"check": "upload", "blocked": false, "would_block": st.decision.WouldBlock(), "rule": st.decision.RuleName(),
		})
	case label == "pac-check" || label == "ca-check":
		s.selftestAnswered(st)
		resp = s.selftestJSON(req, st, http.StatusOK, map[string]any{
			"check": strings.TrimSuffix(label, "-check"), "ok": true, "tls": st.tunnel != nil,
			"client": st.client.Addr().Unmap().String(),
		})
	default:
		s.selftestAnswered(st)
		resp = s.selftestJSON(req, st, http.StatusNotFound, map[string]any{"error": "no such self-test"})
	}
	h := resp.Header
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", "X-Sekisho-Request-Id")
	return resp
}

func (s *Server) selftestJSON(req *http.Request, st *state, status int, v map[string]any) *http.Response {
	v["sekisho"] = true
	v["request_id"] = st.id
	body, _ := json.Marshal(v)
	st.status = status
	// A body the client sent is not read: close the connection after.
	return s.finishing(st, s.response(req, status, "application/json; charset=utf-8", append(body, '\n'), st.id, st.facts.Body.Present))
}
