package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

// get sends one hand-written request on a fresh connection and reads the
// answer.
func get(t *testing.T, h *proxytest.Harness, head string) (*http.Response, string) {
	t.Helper()
	c := h.Raw(t)
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, bufio.NewReader(c))
}

func auditLines(t *testing.T, h *proxytest.Harness, host string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.Audit()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if host == "" || m["host"] == host {
			out = append(out, m)
		}
	}
	return out
}

func assertNoNetwork(t *testing.T, h *proxytest.Harness) {
	t.Helper()
	for _, u := range []*proxytest.Upstream{h.JP, h.KR, h.CN, h.US, h.Unknown, h.JP6} {
		assertUntouched(t, u)
	}
	if h.SinkJP.Conns()+h.SinkKR.Conns() != 0 {
		t.Error("a tunnel sink was dialed")
	}
	if l := h.Lookups(); len(l) != 0 {
		t.Errorf("the resolver was asked for %q", l)
	}
}

func TestPACOnProxyPort(t *testing.T) {
	// Clients from 10/8 only: the PAC file is served to everyone, the rest
	// of sekisho is not (loopback, the test client, is outside).
	h := proxytest.New(t, proxytest.Options{
		AllowedClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		PAC:            pages.PACConfig{Proxies: []string{"proxy1.city.example.lg.jp:3128"}, DirectDomains: []string{"city.example.lg.jp"}},
	})
	pac := h.Proxy.PAC()
	for _, path := range []string{"/proxy.pac", "/wpad.dat"} {
		resp, body := get(t, h, "GET "+path+" HTTP/1.1\r\nHost: proxy1.city.example.lg.jp:3128\r\n\r\n")
		if resp.StatusCode != 200 || body != string(pac.Body()) {
			t.Fatalf("GET %s: %d\n%s", path, resp.StatusCode, body)
		}
		for k, want := range map[string]string{
			"Content-Type":  "application/x-ns-proxy-autoconfig",
			"ETag":          pac.ETag(),
			"Cache-Control": "max-age=300",
		} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("GET %s: %s = %q, want %q", path, k, got, want)
			}
		}
		if !strings.Contains(body, `var proxies = "PROXY proxy1.city.example.lg.jp:3128";`) {
			t.Errorf("PAC:\n%s", body)
		}
	}
	resp, body := get(t, h, "GET /proxy.pac HTTP/1.1\r\nHost: x\r\nIf-None-Match: "+pac.ETag()+"\r\n\r\n")
	if resp.StatusCode != http.StatusNotModified || body != "" || resp.Header.Get("ETag") != pac.ETag() {
		t.Errorf("If-None-Match: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	if resp, _ := get(t, h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 403 {
		t.Errorf("the start page for a client outside clients.allow: %d, want 403", resp.StatusCode)
	}

	// A new PAC (a configuration reload) is served at once, with its own tag.
	next, err := pages.NewPAC(pages.PACConfig{Proxies: []string{"proxy2.city.example.lg.jp:3128"}})
	if err != nil {
		t.Fatal(err)
	}
	h.Proxy.SetPAC(next)
	resp, body = get(t, h, "GET /proxy.pac HTTP/1.1\r\nHost: x\r\nIf-None-Match: "+pac.ETag()+"\r\n\r\n")
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != next.ETag() || !strings.Contains(body, "proxy2.city.example.lg.jp:3128") {
		t.Errorf("after SetPAC: %d %s\n%s", resp.StatusCode, resp.Header.Get("ETag"), body)
	}

	lines := auditLines(t, h, "")
	if len(lines) != 5 || lines[0]["path"] != "/proxy.pac" || lines[0]["status"] != float64(200) || lines[0]["mode"] != nil || lines[0]["action"] != nil {
		t.Errorf("audit lines of PAC requests: %v", lines)
	}
	assertNoNetwork(t, h)
}

func TestOnboardPage(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true})
	resp, page := get(t, h, "GET / HTTP/1.1\r\nHost: "+h.Addr+"\r\n\r\n")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != pages.PageCSP || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %v", resp.StatusCode, resp.Header)
	}
	for _, want := range []string{h.CA.Fingerprint(), "http://" + h.Addr + "/proxy.pac", "Sekisho Test City", `href="/ca.crt"`, "forward proxy"} {
		if !strings.Contains(page, want) {
			t.Errorf("start page lacks %q", want)
		}
	}
	for path, want := range map[string][]byte{"/ca.crt": h.CA.PEM(), "/ca.der": h.CA.DER()} {
		resp, body := get(t, h, "GET "+path+" HTTP/1.1\r\nHost: "+h.Addr+"\r\n\r\n")
		if resp.StatusCode != 200 || !bytes.Equal([]byte(body), want) || resp.Header.Get("Content-Type") != "application/x-x509-ca-cert" {
			t.Errorf("GET %s: %d %s, %d bytes; want the CA's %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(want))
		}
	}
	// Through a fixed proxy setting the browser asks the proxy for itself
	// in absolute form: sekisho serves its pages, it does not dial itself.
	resp, body := get(t, h, fmt.Sprintf("GET http://%s/ca.der HTTP/1.1\r\nHost: %s\r\n\r\n", h.Addr, h.Addr))
	if resp.StatusCode != 200 || body != string(h.CA.DER()) {
		t.Errorf("absolute-form GET of the proxy's own page: %d", resp.StatusCode)
	}
	for head, want := range map[string]int{
		"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n":                   404,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n": 405,
		"HEAD /ca.crt HTTP/1.1\r\nHost: x\r\n\r\n":                200,
	} {
		c := h.Raw(t)
		_, _ = io.WriteString(c, head)
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(head)[0]})
		if err != nil || resp.StatusCode != want {
			t.Errorf("%q: %v %v, want %d", strings.SplitN(head, "\r", 2)[0], resp, err, want)
		}
	}
	assertNoNetwork(t, h)
}

func TestOnboardWithoutInterception(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	resp, body := get(t, h, "GET /ca.crt HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp.StatusCode != 404 || !strings.Contains(body, "TLS interception is off") || !strings.Contains(body, "TLS 検査が無効") {
		t.Errorf("GET /ca.crt without interception: %d %q", resp.StatusCode, body)
	}
	_, page := get(t, h, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if strings.Contains(page, `href="/ca.crt"`) || !strings.Contains(page, "TLS interception is off") {
		t.Error("the start page offers a CA although interception is off")
	}
	_, page = get(t, h, "GET /selftest HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.Contains(page, `data-intercept="off"`) || !strings.Contains(page, `data-upload-url="http://upload-check.selftest.sekisho.invalid/"`) {
		t.Error("the self-test page does not know interception is off")
	}
}

const selftestUpload = "sekisho self-test: a test upload that must be stopped."

func TestSelftestHosts(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true})
	resp, page := get(t, h, "GET /selftest HTTP/1.1\r\nHost: "+h.Addr+"\r\n\r\n")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Security-Policy") != pages.SelftestCSP || !strings.Contains(page, `data-intercept="on"`) {
		t.Fatalf("GET /selftest: %d %v", resp.StatusCode, resp.Header)
	}

	checkJSON := func(name string, resp *http.Response, body string, status int, want map[string]any) {
		t.Helper()
		if resp.StatusCode != status {
			t.Errorf("%s: status %d, want %d\n%s", name, resp.StatusCode, status, body)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no CORS header: %v", name, resp.Header)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, body)
		}
		for k, w := range want {
			if v[k] != w {
				t.Errorf("%s: %s = %v, want %v", name, k, v[k], w)
			}
		}
	}
	// 1: the PAC check, plain HTTP through the proxy.
	resp, body := do(t, h.Client(), newReq(t, "GET", "http://pac-check.selftest.sekisho.invalid/", nil, ""))
	checkJSON("pac-check", resp, body, 200, map[string]any{"sekisho": true, "check": "pac", "ok": true, "tls": false})
	// 2: the CA check, HTTPS opened with sekisho's CA.
	resp, body = do(t, h.TLSClient(), newReq(t, "GET", "https://ca-check.selftest.sekisho.invalid/", nil, ""))
	checkJSON("ca-check", resp, body, 200, map[string]any{"sekisho": true, "check": "ca", "ok": true, "tls": true})
	// 3: the upload check, over HTTPS and HTTP: decided as foreign.
	for _, u := range []string{"https://upload-check.selftest.sekisho.invalid/", "http://upload-check.selftest.sekisho.invalid/"} {
		req := newReq(t, "POST", u, []byte(selftestUpload), "text/plain")
		req.Header.Set("Accept", "application/json")
		resp, body = do(t, h.TLSClient(), req)
		checkJSON(u, resp, body, 403, map[string]any{"error": "upload_blocked", "rule": "block-foreign-uploads", "service": "selftest", "country": "unknown"})
	}
	// A CORS preflight, should a browser send one.
	resp, _ = get(t, h, "OPTIONS http://upload-check.selftest.sekisho.invalid/ HTTP/1.1\r\nHost: upload-check.selftest.sekisho.invalid\r\n"+
		"Origin: http://"+h.Addr+"\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Private-Network: true\r\n\r\n")
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Access-Control-Allow-Private-Network") != "true" {
		t.Errorf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp, body = do(t, h.Client(), newReq(t, "GET", "http://other.selftest.sekisho.invalid:8080/", nil, ""))
	checkJSON("unknown self-test", resp, body, 404, map[string]any{"sekisho": true})

	// Inside a self-test tunnel, a request for another host is domain
	// fronting like anywhere else; it goes nowhere.
	req := newReq(t, "GET", "https://ca-check.selftest.sekisho.invalid/", nil, "")
	req.Host = "jp.example"
	resp, _ = do(t, h.TLSClient(), req)
	if resp.StatusCode != 403 {
		t.Errorf("fronting inside a self-test tunnel: %d", resp.StatusCode)
	}

	// Nothing was resolved or dialed.
	assertNoNetwork(t, h)

	// Audited as the self-test, and not counted as traffic.
	waitFor(t, func() bool { return len(auditLines(t, h, "upload-check.selftest.sekisho.invalid")) >= 3 })
	for _, host := range []string{"pac-check.selftest.sekisho.invalid", "ca-check.selftest.sekisho.invalid", "upload-check.selftest.sekisho.invalid"} {
		lines := auditLines(t, h, host)
		if len(lines) == 0 {
			t.Errorf("no audit line for %s", host)
		}
		for _, l := range lines {
			if l["service"] != "selftest" || l["reason"] != "selftest" || l["addr"] != nil {
				t.Errorf("audit line for %s: %v", host, l)
			}
			if host == "upload-check.selftest.sekisho.invalid" && l["method"] == "POST" && (l["action"] != "block" || l["rule"] != "block-foreign-uploads" || l["upload_bytes"] != float64(0)) {
				t.Errorf("upload-check audit line: %v", l)
			}
		}
	}
	if n := metricSum(t, h, "sekisho_proxy_requests_total", "service", "selftest"); n != 0 {
		t.Errorf("self-test requests counted as traffic: %v", n)
	}
}

func TestSelftestUploadFollowsTheRules(t *testing.T) {
	tests := []struct {
		name, rules string
		status      int
		want        map[string]any
	}{
		{"a rule on service other", "version: 1\nrules:\n  - name: no-uploads-to-other-abroad\n    services: [other]\n    destinations: [foreign]\n    upload: true\n    action: block\n",
			403, map[string]any{"error": "upload_blocked", "rule": "no-uploads-to-other-abroad"}},
		{"report-only", "version: 1\nreport_only: true\nrules:\n  - name: block-foreign-uploads\n    destinations: [foreign]\n    upload: true\n    action: block\n",
			200, map[string]any{"blocked": false, "would_block": true, "rule": "block-foreign-uploads"}},
		{"uploads abroad allowed", "version: 1\ndefault: allow\n",
			200, map[string]any{"blocked": false, "would_block": false, "rule": "default"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := proxytest.New(t, proxytest.Options{Rules: tt.rules})
			req := newReq(t, "POST", "http://upload-check.selftest.sekisho.invalid/", []byte(selftestUpload), "text/plain")
			req.Header.Set("Accept", "application/json")
			resp, body := do(t, h.Client(), req)
			var v map[string]any
			_ = json.Unmarshal([]byte(body), &v)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
			for k, w := range tt.want {
				if v[k] != w {
					t.Errorf("%s = %v, want %v (%s)", k, v[k], w, body)
				}
			}
			assertNoNetwork(t, h)
		})
	}
}

func TestSelftestWithoutInterception(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	resp, _ := get(t, h, "CONNECT ca-check.selftest.sekisho.invalid:443 HTTP/1.1\r\nHost: ca-check.selftest.sekisho.invalid:443\r\n\r\n")
	if resp.StatusCode != 404 {
		t.Errorf("CONNECT to the CA check without interception: %d, want 404", resp.StatusCode)
	}
	req := newReq(t, "POST", "http://upload-check.selftest.sekisho.invalid/", []byte(selftestUpload), "text/plain")
	if resp, body := do(t, h.Client(), req); resp.StatusCode != 403 || !strings.Contains(body, "この送信はブロックされました") {
		t.Errorf("upload check: %d", resp.StatusCode)
	}
	assertNoNetwork(t, h)
}
