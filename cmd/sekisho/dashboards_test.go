package main

// The dashboards and alert rules in dashboards/, proven against a real
// Prometheus that scrapes a sekisho carrying a known sequence of traffic;
// and the traffic counters of that sequence, asserted series by series.
//
// SEKISHO_DASHBOARD_DEBUG=1 logs the result of every dashboard query.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sekisho/sekisho/proxy/mitm"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

// dashboardRules are the rules of the dashboard tests: three catalog
// services on the test sites, two client groups (by source address on
// loopback), a log rule, two block rules, a small foreign tunnel budget so
// that one tunnel exceeds it, and TLS interception of three test sites
// (the tunnels to jp.example and kr.example stay opaque). %v is
// report_only.
const dashboardRules = `version: 1
domestic: [JP]
report_only: %v
inspection:
  default: false
  rules:
    - name: open-test-sites
      domains: [us.example, cn.example, wrongname.example]
      inspect: true
tunnel_upload_budget:
  foreign: 1KiB
  domestic: unlimited
client_groups:
  - name: welfare
    title: 福祉課
    networks: [127.0.0.2/32]
  - name: tax
    title: 税務課
    networks: [127.0.0.3/32]
services:
  - name: city-portal
    title: 市のポータル
    domains: [jp.example]
  - name: kr-drive
    title: 韓国のファイル共有
    domains: [kr.example]
  - name: us-chat
    title: 米国のチャット
    domains: [us.example]
rules:
  - name: log-us-chat-uploads
    services: [us-chat]
    upload: true
    action: log
  - name: block-kr-drive-uploads
    services: [kr-drive]
    upload: true
    action: block
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`

// Source addresses of the client groups of dashboardRules; 127.0.0.1 is in
// no group ("other").
const (
	srcWelfare = "127.0.0.2"
	srcTax     = "127.0.0.3"
	srcOther   = "127.0.0.1"
)

// dialFrom opens a TCP connection to the proxy from a loopback source
// address, so that the request belongs to that address's client group.
func (e *env) dialFrom(t *testing.T, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", e.inst.ProxyAddrs[0])
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// clientFrom is a proxy client whose connections come from src.
func (e *env) clientFrom(src string) *http.Client {
	pu, _ := url.Parse("http://" + e.inst.ProxyAddrs[0])
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(pu), DialContext: d.DialContext, DisableKeepAlives: true},
		Timeout:   10 * time.Second,
	}
}

// send makes one request through the proxy from src and returns the status
// and the number of body bytes the client received.
func (e *env) send(t *testing.T, src, method, host, body string) (int, int) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.sites.URL(host, "/upload"), r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain")
	}
	resp, err := e.clientFrom(src).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, len(b)
}

// tunnel opens a CONNECT tunnel from src to host:SinkPort, sends up bytes,
// reads the sink's greeting and closes. It returns the CONNECT status.
func (e *env) tunnel(t *testing.T, src, host string, up int) int {
	t.Helper()
	c := e.dialFrom(t, src)
	defer c.Close()
	target := net.JoinHostPort(host, fmt.Sprint(e.sites.SinkPort))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		return resp.StatusCode
	}
	greeting := make([]byte, len(sinkGreeting))
	if _, err := io.ReadFull(br, greeting); err != nil {
		t.Fatalf("tunnel to %s: reading the greeting: %v", host, err)
	}
	_, _ = c.Write(bytes.Repeat([]byte("u"), up)) // may fail once over the budget
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, br) // until the proxy ends the tunnel
	return resp.StatusCode
}

const sinkGreeting = "220 sink ready\r\n"

// websocket upgrades a GET to jp.example/ws from src, sends up bytes and
// closes.
func (e *env) websocket(t *testing.T, src string, up int) {
	t.Helper()
	c := e.dialFrom(t, src)
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: jp.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", e.sites.URL("jp.example", "/ws"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("websocket: status %d", resp.StatusCode)
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "hello from JP\n" {
		t.Fatalf("websocket greeting %q, %v", line, err)
	}
	_, _ = c.Write(bytes.Repeat([]byte("w"), up))
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, br)
}

// dashEnv is a sekisho booted for the dashboard tests: the rules and
// configuration files it reloads, and the interception CA its TLS clients
// trust.
type dashEnv struct {
	*env
	rulesPath string
	cfgPath   string
	ca        *x509.Certificate
	caPool    *x509.CertPool
}

// bootDashboard starts sekisho on dashboardRules with its file watcher
// stopped, so that only the explicit POST /-/reload calls reload. TLS
// interception is on: a CA made by `sekisho ca init` in tls.ca_dir, and
// the test sites' CA in tls.upstream_roots.
func bootDashboard(t *testing.T) *dashEnv {
	t.Helper()
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, fmt.Sprintf(dashboardRules, false))
	caDir := filepath.Join(dir, "ca")
	var out, errOut bytes.Buffer
	if code := cmdCA([]string{"init", "--dir", caDir, "--org", "Sekisho Dashboard Test City"}, &out, &errOut); code != 0 {
		t.Fatalf("sekisho ca init: %d\n%s%s", code, out.String(), errOut.String())
	}
	ca, err := mitm.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	rootsPath := filepath.Join(dir, "upstream-roots.pem")
	writeFile(t, rootsPath, string(proxytest.TestUpstreamCA().PEM))
	e := boot(t, rulesPath, fmt.Sprintf("tls:\n  ca_dir: %s\n  upstream_roots: [%s]\n", caDir, rootsPath))
	e.inst.reloader.close()
	e.sites.SinkJP.SetGreeting([]byte(sinkGreeting))
	e.sites.SinkKR.SetGreeting([]byte(sinkGreeting))
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return &dashEnv{env: e, rulesPath: rulesPath, cfgPath: filepath.Join(e.dir, "sekisho.yaml"), ca: ca.Cert, caPool: pool}
}

// sendTLS makes one HTTPS request through the proxy from src, trusting
// only sekisho's CA (as a PC the CA was rolled out to), on a new
// connection: every request is a new CONNECT and TLS handshake. It returns
// the status and the number of body bytes the client received.
func (d *dashEnv) sendTLS(t *testing.T, src, method, host, body string) (int, int) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, d.sites.TLSURL(host, "/upload"), r)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "text/plain")
	}
	c := d.clientFrom(src)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: d.caPool}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.TLS == nil {
		t.Fatalf("%s %s: not answered over TLS", method, host)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, len(b)
}

// fronting opens a CONNECT to host on the TLS port from src and starts TLS
// with another name in its SNI: domain fronting, refused in the handshake.
func (d *dashEnv) fronting(t *testing.T, src, host, sni string) {
	t.Helper()
	c := d.dialFrom(t, src)
	defer c.Close()
	target := net.JoinHostPort(host, fmt.Sprint(d.sites.TLSPort))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: d.caPool})
	if err := tc.Handshake(); err == nil {
		t.Fatalf("TLS with SNI %s inside a CONNECT to %s: the handshake must fail", sni, host)
	}
}

// sendDashboardTraffic sends the known sequence — allowed, logged and
// blocked requests, tunnels (one over its budget), a WebSocket, HTTPS
// requests opened by TLS interception (allowed, logged, a blocked upload,
// one to a site whose certificate does not match, and a domain fronting
// attempt), a rules and sekisho.yaml reload into report-only with one
// upload it lets through, and a failing reload of both — and waits until
// sekisho has recorded all of it. It returns the body bytes the clients
// received, by "<service>/<client_group>/<action>" ("inspected/..." for
// the HTTPS requests).
func sendDashboardTraffic(t *testing.T, e *dashEnv) map[string]int {
	t.Helper()
	down := map[string]int{}
	expect := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Fatalf("%s: status %d, want %d", what, got, want)
		}
	}
	req := func(src, method, host, body string, want int, key string) {
		t.Helper()
		code, n := e.send(t, src, method, host, body)
		expect(method+" "+host+" from "+src, code, want)
		down[key] += n
	}
	reqTLS := func(src, method, host, body string, want int, key string) {
		t.Helper()
		code, n := e.sendTLS(t, src, method, host, body)
		expect(method+" https://"+host+" from "+src, code, want)
		down["inspected/"+key] += n
	}
	// welfare: a domestic download and upload, a blocked upload to the
	// Korean drive, a logged upload to the US chat, a download from Korea.
	req(srcWelfare, "GET", "jp.example", "", 200, "city-portal/welfare/allow")
	req(srcWelfare, "POST", "jp.example", "application form", 200, "city-portal/welfare/allow")
	req(srcWelfare, "POST", "kr.example", "residents' data", 403, "kr-drive/welfare/block")
	req(srcWelfare, "POST", "us.example", "meeting notes", 200, "us-chat/welfare/log")
	req(srcWelfare, "GET", "kr.example", "", 200, "kr-drive/welfare/allow")
	// tax: a blocked upload to China (no catalog service), a tunnel to
	// Korea within its budget and one over it.
	req(srcTax, "POST", "cn.example", "tax records", 403, "other/tax/block")
	expect("tunnel to KR", e.tunnel(t, srcTax, "kr.example", 100), 200)
	expect("tunnel to KR over budget", e.tunnel(t, srcTax, "kr.example", 4096), 200)
	// no group: a domestic tunnel, a WebSocket, an upload to an address no
	// database places (blocked: unknown is foreign).
	expect("tunnel to JP", e.tunnel(t, srcOther, "jp.example", 10), 200)
	e.websocket(t, srcOther, 20)
	req(srcOther, "PUT", "unknown.example", "x", 403, "other/other/block")

	// HTTPS, opened by TLS interception. welfare: a download from the US
	// chat (its certificate signed), then a logged upload to it (the
	// certificate from the cache). tax: an upload to China, blocked inside
	// TLS. No group: a site whose certificate does not name it (an
	// upstream_tls error), and a TLS handshake naming another site than
	// the CONNECT (domain fronting, refused before any certificate).
	reqTLS(srcWelfare, "GET", "us.example", "", 200, "us-chat/welfare/allow")
	reqTLS(srcWelfare, "POST", "us.example", "meeting notes", 200, "us-chat/welfare/log")
	reqTLS(srcTax, "POST", "cn.example", "tax records", 403, "other/tax/block")
	reqTLS(srcOther, "GET", "wrongname.example", "", 502, "other/other/allow")
	e.fronting(t, srcOther, "us.example", "cn.example")

	// Roll out a change in report-only mode, with a new helpdesk in
	// sekisho.yaml: the blocked upload goes through, counted as
	// would-block.
	cfgText, err := os.ReadFile(e.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, e.rulesPath, fmt.Sprintf(dashboardRules, true))
	writeFile(t, e.cfgPath, string(cfgText)+"helpdesk: \"情報政策課 (内線 1234)\"\n")
	if code, body := e.admin(t, "POST", "/-/reload"); code != 200 {
		t.Fatalf("reload into report-only: %d %s", code, body)
	}
	req(srcWelfare, "POST", "kr.example", "residents' data", 200, "kr-drive/welfare/log")
	// A broken edit of both files: the reload fails, report-only and the
	// new helpdesk stay in force.
	writeFile(t, e.rulesPath, "version: 1\nrulez: []\n")
	writeFile(t, e.cfgPath, string(cfgText)+"helpdesk: \"情報政策課 (内線 1234)\"\nhelpdsek: typo\n")
	if code, body := e.admin(t, "POST", "/-/reload"); code != 500 {
		t.Fatalf("reload of broken files: %d %s", code, body)
	}

	// Tunnels and intercepted sessions are recorded when they end, just
	// after the client sees EOF.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := scrape(t, e.env)
		if s.sum("sekisho_proxy_requests_total") == dashboardRequests && s.sum("sekisho_proxy_active_connections") == 0 &&
			s.sum("sekisho_proxy_active_tunnels") == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sekisho did not record the known sequence:\n%s", s.text)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return down
}

// dashboardRequests is the number of requests, tunnels and WebSockets in
// the known sequence (an intercepted CONNECT is not one: each request
// inside it is).
const dashboardRequests = 16

// exposition is one scrape of /metrics: sample lines by series
// ("name{labels}" as sekisho writes it, labels sorted) → value.
type exposition struct {
	text    string
	samples map[string]float64
}

func scrape(t *testing.T, e *env) exposition {
	t.Helper()
	code, text := e.admin(t, "GET", "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d", code)
	}
	x := exposition{text: text, samples: map[string]float64{}}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		x.samples[line[:i]] = v
	}
	return x
}

// family returns the samples of one metric name.
func (x exposition) family(name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range x.samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			out[k] = v
		}
	}
	return out
}

func (x exposition) sum(name string) float64 {
	var s float64
	for _, v := range x.family(name) {
		s += v
	}
	return s
}

// TestDashboardMetricsAfterKnownSequence asserts every traffic counter
// after the known sequence, series by series: each label combination of
// service, country, action, mode and client group, and no other; and the
// counters of TLS interception, refusals, errors and reloads. The
// dashboards and alerts are built on exactly these series.
func TestDashboardMetricsAfterKnownSequence(t *testing.T) {
	e := bootDashboard(t)
	down := sendDashboardTraffic(t, e)
	x := scrape(t, e.env)

	const (
		tunnelJP = `action="allow",client_group="other",country="JP",mode="tunnel",service="city-portal"`
		wsJP     = `action="allow",client_group="other",country="JP",mode="websocket",service="city-portal"`
		tunnelKR = `action="allow",client_group="tax",country="KR",mode="tunnel",service="kr-drive"`
		httpJP   = `action="allow",client_group="welfare",country="JP",mode="http",service="city-portal"`
		httpKR   = `action="allow",client_group="welfare",country="KR",mode="http",service="kr-drive"`
		logKR    = `action="log",client_group="welfare",country="KR",mode="http",service="kr-drive"`
		logUS    = `action="log",client_group="welfare",country="US",mode="http",service="us-chat"`
		// Requests inside intercepted tunnels.
		inspUS      = `action="allow",client_group="welfare",country="US",mode="inspected",service="us-chat"`
		inspLogUS   = `action="log",client_group="welfare",country="US",mode="inspected",service="us-chat"`
		inspBlockCN = `action="block",client_group="tax",country="CN",mode="inspected",service="other"`
		inspWrong   = `action="allow",client_group="other",country="US",mode="inspected",service="other"`
	)
	series := func(name string, kv map[string]float64) map[string]float64 {
		out := map[string]float64{}
		for labels, v := range kv {
			out[name+"{"+labels+"}"] = v
		}
		return out
	}
	want := map[string]map[string]float64{
		"sekisho_proxy_requests_total": series("sekisho_proxy_requests_total", map[string]float64{
			tunnelJP: 1, wsJP: 1, tunnelKR: 2, httpJP: 2, httpKR: 1, logKR: 1, logUS: 1,
			inspUS: 1, inspLogUS: 1, inspBlockCN: 1, inspWrong: 1,
			`action="block",client_group="other",country="unknown",mode="http",service="other"`: 1,
			`action="block",client_group="tax",country="CN",mode="http",service="other"`:        1,
			`action="block",client_group="welfare",country="KR",mode="http",service="kr-drive"`: 1,
		}),
		// Bodies and tunnel bytes as sent; the tunnel over its 1 KiB budget
		// counts 1024 bytes, the byte over it was never forwarded. Blocked
		// requests have no upload series at all: nothing left.
		"sekisho_proxy_upload_bytes_total": series("sekisho_proxy_upload_bytes_total", map[string]float64{
			tunnelJP: 10, wsJP: 20, tunnelKR: 100 + 1024,
			httpJP:    float64(len("application form")),
			logKR:     float64(len("residents' data")),
			logUS:     float64(len("meeting notes")),
			inspLogUS: float64(len("meeting notes")),
		}),
		// Response bodies as the clients received them; a block page, and
		// the error page for a certificate that does not match, are
		// sekisho's own answers, not downloads.
		"sekisho_proxy_download_bytes_total": series("sekisho_proxy_download_bytes_total", map[string]float64{
			tunnelJP: float64(len(sinkGreeting)), wsJP: float64(len("hello from JP\n")),
			tunnelKR:  2 * float64(len(sinkGreeting)),
			httpJP:    float64(down["city-portal/welfare/allow"]),
			httpKR:    float64(down["kr-drive/welfare/allow"]),
			logKR:     float64(down["kr-drive/welfare/log"]),
			logUS:     float64(down["us-chat/welfare/log"]),
			inspUS:    float64(down["inspected/us-chat/welfare/allow"]),
			inspLogUS: float64(down["inspected/us-chat/welfare/log"]),
		}),
		"sekisho_proxy_blocked_total": series("sekisho_proxy_blocked_total", map[string]float64{
			`client_group="other",country="unknown",rule="block-foreign-uploads",service="other"`:  1,
			`client_group="tax",country="CN",rule="block-foreign-uploads",service="other"`:         2, // plain and inspected
			`client_group="welfare",country="KR",rule="block-kr-drive-uploads",service="kr-drive"`: 1,
		}),
		"sekisho_proxy_would_block_total": series("sekisho_proxy_would_block_total", map[string]float64{
			`client_group="welfare",country="KR",rule="block-kr-drive-uploads",service="kr-drive"`: 1,
		}),
		"sekisho_proxy_tunnel_budget_exceeded_total": series("sekisho_proxy_tunnel_budget_exceeded_total", map[string]float64{
			`client_group="tax",country="KR",service="kr-drive"`: 1,
		}),
		"sekisho_proxy_request_duration_seconds_count": series("sekisho_proxy_request_duration_seconds_count", map[string]float64{
			`mode="http"`: 8, `mode="tunnel"`: 3, `mode="websocket"`: 1, `mode="inspected"`: 4,
		}),
		// One lookup per plain request, tunnel and WebSocket, and one per
		// intercepted CONNECT (four requests and the domain fronting
		// attempt): the requests inside go where their CONNECT was decided
		// to go.
		"sekisho_geo_lookups_total": series("sekisho_geo_lookups_total", map[string]float64{
			`result="found"`: 16, `result="internal"`: 0, `result="unknown"`: 1,
		}),
		"sekisho_rules_reloads_total": series("sekisho_rules_reloads_total", map[string]float64{
			`result="success"`: 1, `result="failure"`: 1,
		}),
		"sekisho_rules_last_reload_successful": {"sekisho_rules_last_reload_successful": 0},
		"sekisho_rules_report_only":            {"sekisho_rules_report_only": 1},
		"sekisho_rules_loaded":                 {"sekisho_rules_loaded": 3},
		"sekisho_proxy_active_connections":     {"sekisho_proxy_active_connections": 0},
		"sekisho_proxy_max_connections":        {"sekisho_proxy_max_connections": 10000},
		"sekisho_config_reloads_total": series("sekisho_config_reloads_total", map[string]float64{
			`result="success"`: 1, `result="failure"`: 1,
		}),
		"sekisho_config_last_reload_successful": {"sekisho_config_last_reload_successful": 0},
		// Three hosts opened: us.example (signed, then from the cache),
		// cn.example and wrongname.example (signed). The domain fronting
		// handshake is refused before a certificate is chosen.
		"sekisho_tls_certificates_issued_total":      {"sekisho_tls_certificates_issued_total": 3},
		"sekisho_tls_certificate_cache_hits_total":   {"sekisho_tls_certificate_cache_hits_total": 1},
		"sekisho_tls_certificate_cache_entries":      {"sekisho_tls_certificate_cache_entries": 3},
		"sekisho_tls_certificate_sign_seconds_count": {"sekisho_tls_certificate_sign_seconds_count": 3},
		"sekisho_tls_ca_expiry_timestamp_seconds":    {"sekisho_tls_ca_expiry_timestamp_seconds": float64(e.ca.NotAfter.Unix())},
	}
	for name, w := range want {
		got := x.family(name)
		for k, v := range w {
			if g, ok := got[k]; !ok {
				t.Errorf("missing %s (want %v)", k, v)
			} else if g != v {
				t.Errorf("%s = %v, want %v", k, g, v)
			}
		}
		for k, v := range got {
			if _, ok := w[k]; !ok {
				t.Errorf("unexpected series %s %v", k, v)
			}
		}
	}
	// Nothing else failed or was refused, and every tunnel has ended.
	nonZero := map[string]float64{
		`sekisho_proxy_refused_total{reason="domain_fronting"}`:      1,
		`sekisho_proxy_upstream_errors_total{reason="upstream_tls"}`: 1,
	}
	for _, name := range []string{"sekisho_proxy_refused_total", "sekisho_proxy_upstream_errors_total", "sekisho_proxy_active_tunnels"} {
		for k, v := range x.family(name) {
			if v != nonZero[k] {
				t.Errorf("%s = %v, want %v", k, v, nonZero[k])
			}
			delete(nonZero, k)
		}
	}
	for k, v := range nonZero {
		t.Errorf("missing %s (want %v)", k, v)
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", x.text)
	}
}

// dashboardTool finds a program the dashboard tests run. Without it the
// test is skipped, unless SEKISHO_REQUIRE_TOOLS is set (as in CI).
func dashboardTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SEKISHO_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s is required (SEKISHO_REQUIRE_TOOLS is set): %v; install the Debian package prometheus", name, err)
		}
		t.Skipf("%s not found (install the Debian package prometheus): %v", name, err)
	}
	return p
}

// promServer is a real Prometheus started by a test.
type promServer struct {
	url string
	out *syncBuffer
}

// startPrometheus runs the prometheus binary on a free loopback port with
// a temporary database, scraping target every second as job "sekisho" and
// evaluating rulesFile every second.
func startPrometheus(t *testing.T, bin, target, rulesFile string) *promServer {
	t.Helper()
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: sekisho
    static_configs:
      - targets: [%q]
`, rulesFile, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	writeFile(t, cfgPath, cfg)
	p := &promServer{url: "http://" + addr, out: newSyncBuffer()}
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus log:\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", p.out.String())
		default:
		}
		resp, err := http.Get(p.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s:\n%s", p.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promSample is one element of an instant vector.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s promSample) value() float64 {
	str, _ := s.Value[1].(string)
	v, _ := strconv.ParseFloat(str, 64)
	return v
}

// api GETs a Prometheus HTTP API path and decodes its data field into v.
func (p *promServer) api(t *testing.T, path string, params url.Values, v any) error {
	t.Helper()
	resp, err := http.Get(p.url + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %d: %v", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s: %s", path, body.Error)
	}
	return json.Unmarshal(body.Data, v)
}

// query runs an instant query at the current time; a scalar result comes
// back as one sample without labels.
func (p *promServer) query(t *testing.T, q string) ([]promSample, error) {
	t.Helper()
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api(t, "/api/v1/query", url.Values{"query": {q}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType == "scalar" {
		var v [2]any
		err := json.Unmarshal(data.Result, &v)
		return []promSample{{Value: v}}, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	var out []promSample
	err := json.Unmarshal(data.Result, &out)
	return out, err
}

// waitFor polls an instant query until cond holds on its result.
func (p *promServer) waitFor(t *testing.T, what, q string, timeout time.Duration, cond func([]promSample) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		res, err := p.query(t, q)
		if err == nil && cond(res) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s gave %v (error %v)", what, q, res, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func oneValue(want float64) func([]promSample) bool {
	return func(r []promSample) bool { return len(r) == 1 && r[0].value() == want }
}

// Grafana's built-in interval variables, as the test substitutes them: the
// whole test runs within these windows.
var grafanaBuiltins = map[string]string{
	"__rate_interval": "1m",
	"__interval":      "1m",
	"__range":         "5m",
}

var grafanaVarRef = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]`)

// grafanaDashboard is the part of a dashboard's JSON the test reads.
type grafanaDashboard struct {
	UID         string         `json:"uid"`
	Title       string         `json:"title"`
	Panels      []grafanaPanel `json:"panels"`
	Annotations struct {
		List []struct {
			Name string `json:"name"`
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
			Current    struct {
				Value any `json:"value"`
			} `json:"current"`
		} `json:"list"`
	} `json:"templating"`
}

type grafanaPanel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description"`
	Datasource  *grafanaDSRef   `json:"datasource"`
	GridPos     *map[string]int `json:"gridPos"`
	Targets     []struct {
		Expr       string        `json:"expr"`
		RefID      string        `json:"refId"`
		Datasource *grafanaDSRef `json:"datasource"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's panels
}

type grafanaDSRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// substitute replaces Grafana variables the way Grafana does for "All":
// query variables become .*, text boxes their default value, and the
// built-in intervals a duration.
func (d *grafanaDashboard) substitute(t *testing.T, expr string) string {
	t.Helper()
	vars := map[string]string{}
	for k, v := range grafanaBuiltins {
		vars[k] = v
	}
	for _, v := range d.Templating.List {
		switch v.Type {
		case "query":
			vars[v.Name] = ".*"
		case "textbox", "constant", "custom":
			s, _ := v.Current.Value.(string)
			vars[v.Name] = s
		}
	}
	return grafanaVarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := grafanaVarRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		val, ok := vars[name]
		if !ok {
			t.Errorf("dashboard %s: query %q uses undefined variable $%s", d.UID, expr, name)
		}
		return val
	})
}

var byInstance = regexp.MustCompile(`by \([^)]*\binstance\b`)

// TestDashboardQueriesAgainstPrometheus runs a real Prometheus against a
// sekisho carrying the known sequence of traffic, then runs every query of
// every dashboard in dashboards/ and requires data from each; it checks
// that Prometheus loaded the alert rules without errors and that the
// alerts this state must raise are active.
func TestDashboardQueriesAgainstPrometheus(t *testing.T) {
	bin := dashboardTool(t, "prometheus")
	promtool := dashboardTool(t, "promtool")
	dashDir, err := filepath.Abs(filepath.Join("..", "..", "dashboards"))
	if err != nil {
		t.Fatal(err)
	}
	alertsFile := filepath.Join(dashDir, "alerts.yml")

	e := bootDashboard(t)
	prom := startPrometheus(t, bin, e.inst.AdminAddr, alertsFile)
	// Scraped once before the traffic: the gauges have history, and every
	// traffic series is born while Prometheus watches.
	prom.waitFor(t, "the first scrape", `up{job="sekisho"}`, 20*time.Second, oneValue(1))
	sendDashboardTraffic(t, e)
	// The final state scraped, then scraped again: every series has at
	// least two samples, as rate() needs.
	prom.waitFor(t, "the traffic to be scraped", `sum(sekisho_proxy_requests_total)`, 20*time.Second, oneValue(dashboardRequests))
	prom.waitFor(t, "the failed reload to be scraped", `sekisho_rules_last_reload_successful`, 20*time.Second, oneValue(0))
	res, err := prom.query(t, `timestamp(up{job="sekisho"})`)
	if err != nil || len(res) != 1 {
		t.Fatalf("time of the last scrape: %v %v", res, err)
	}
	final := res[0].value()
	prom.waitFor(t, "two more scrapes", `timestamp(up{job="sekisho"})`, 20*time.Second,
		func(r []promSample) bool { return len(r) == 1 && r[0].value() >= final+1.5 })

	t.Run("metrics pass promtool check metrics", func(t *testing.T) {
		_, text := e.admin(t, "GET", "/metrics")
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(text)
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})

	t.Run("alert rules", func(t *testing.T) {
		checkAlertRules(t, prom, alertsFile, e.inst.AdminAddr)
	})

	files, err := filepath.Glob(filepath.Join(dashDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in %s: %v", dashDir, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			checkDashboard(t, prom, file)
		})
	}

	// The totals count a series born inside the time range in full, so
	// the overview's stats are exact even for counters that were
	// incremented once.
	t.Run("overview totals are exact", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dashDir, "sekisho-overview.json"))
		if err != nil {
			t.Fatal(err)
		}
		var d grafanaDashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		want := map[string]float64{
			"国外への送信量 / Data sent abroad":               1124 + 13 + 13 + 15, // tunnels to KR, logged to US (plain and inspected), report-only to KR
			"ブロックした件数 / Blocked":                       4,
			"本来ブロック（レポートのみ） / Would have been blocked": 1,
			"トンネル上限超過 / Tunnels over budget":           1,
			"リクエスト数 / Requests":                        dashboardRequests,
			"ルールの再読込 / Rules reload":                   0,
			"動作モード / Enforcement":                      1,
			"稼働中のインスタンス / Instances up":                1,
			"上流の TLS エラー / Upstream TLS errors":        1,
			"ドメインフロンティング / Domain fronting refused":    1,
			"接続数と上限 / Connections vs limit":            0,
		}
		// Within a minute: time() moves on while the test runs.
		approx := map[string]float64{
			"TLS 検査の CA の有効期限 / Interception CA expires in": time.Until(e.ca.NotAfter).Hours() / 24,
		}
		for _, p := range allPanels(d.Panels) {
			if w, ok := approx[p.Title]; ok {
				delete(approx, p.Title)
				res, err := prom.query(t, d.substitute(t, p.Targets[0].Expr))
				if err != nil || len(res) != 1 || math.Abs(res[0].value()-w) > 1.0/24/60 {
					t.Errorf("%s: %v (error %v), want %v", p.Title, res, err, w)
				}
				continue
			}
			w, ok := want[p.Title]
			if !ok {
				continue
			}
			delete(want, p.Title)
			res, err := prom.query(t, d.substitute(t, p.Targets[0].Expr))
			if err != nil || len(res) != 1 || res[0].value() != w {
				t.Errorf("%s: %v (error %v), want %v", p.Title, res, err, w)
			}
		}
		for title := range want {
			t.Errorf("no panel %q", title)
		}
		for title := range approx {
			t.Errorf("no panel %q", title)
		}
	})

	// The panels by mode show the requests inside intercepted tunnels as
	// mode="inspected", beside plain HTTP, tunnels and WebSockets; the
	// upload bytes of each mode are exact.
	t.Run("overview modes include inspected", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(dashDir, "sekisho-overview.json"))
		if err != nil {
			t.Fatal(err)
		}
		var d grafanaDashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatal(err)
		}
		want := map[string]map[string]float64{
			"検査・トンネルの割合 / Inspected vs tunnelled": nil, // rates: only the modes
			"方式別の送信量 / Upload bytes by mode": {
				"http":      float64(len("application form") + len("meeting notes") + len("residents' data")),
				"inspected": float64(len("meeting notes")),
				"tunnel":    100 + 1024 + 10,
				"websocket": 20,
			},
		}
		for _, p := range allPanels(d.Panels) {
			w, ok := want[p.Title]
			if !ok {
				continue
			}
			delete(want, p.Title)
			res, err := prom.query(t, d.substitute(t, p.Targets[0].Expr))
			if err != nil {
				t.Fatalf("%s: %v", p.Title, err)
			}
			got := map[string]float64{}
			for _, r := range res {
				got[r.Metric["mode"]] = r.value()
			}
			var modes []string
			for m := range got {
				modes = append(modes, m)
			}
			slices.Sort(modes)
			if !slices.Equal(modes, []string{"http", "inspected", "tunnel", "websocket"}) {
				t.Errorf("%s: modes %v, want http, inspected, tunnel, websocket", p.Title, modes)
			}
			for m, v := range w {
				if got[m] != v {
					t.Errorf("%s: %s = %v, want %v", p.Title, m, got[m], v)
				}
			}
		}
		for title := range want {
			t.Errorf("no panel %q", title)
		}
	})
}

func allPanels(ps []grafanaPanel) []grafanaPanel {
	var out []grafanaPanel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// checkDashboard checks one dashboard's structure and runs every query of
// its panels, annotations and variables against Prometheus.
func checkDashboard(t *testing.T, prom *promServer, file string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", file, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title")
	}
	hasDS := false
	for _, v := range d.Templating.List {
		hasDS = hasDS || (v.Type == "datasource" && v.Name == "datasource")
	}
	if !hasDS {
		t.Errorf("no datasource variable named datasource")
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range allPanels(d.Panels) {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos == nil {
			t.Errorf("panel %q has no gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if !strings.Contains(p.Title, " / ") {
			t.Errorf("panel %q: title must be \"Japanese / English\"", p.Title)
		}
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource must be ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q query %s: datasource must be ${datasource}", p.Title, tg.RefID)
			}
			queries++
			checkQuery(t, prom, &d, fmt.Sprintf("panel %q query %s", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			queries++
			checkQuery(t, prom, &d, fmt.Sprintf("annotation %q", a.Name), a.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// label_values(selector, label): the variable's choices.
		m := regexp.MustCompile(`^label_values\((.+), (\w+)\)$`).FindStringSubmatch(v.Definition)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, v.Definition)
			continue
		}
		var series []map[string]string
		if err := prom.api(t, "/api/v1/series", url.Values{"match[]": {d.substitute(t, m[1])}}, &series); err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		found := false
		for _, s := range series {
			found = found || s[m[2]] != ""
		}
		if !found {
			t.Errorf("variable %s: %s has no values", v.Name, v.Definition)
		}
	}
	t.Logf("%s: %d panels, %d queries run", d.Title, len(ids), queries)
}

// checkQuery runs one dashboard query: it must parse, return data, and sum
// over instances unless it explicitly groups by instance.
func checkQuery(t *testing.T, prom *promServer, d *grafanaDashboard, what, expr string) {
	t.Helper()
	q := d.substitute(t, expr)
	res, err := prom.query(t, q)
	switch {
	case err != nil:
		t.Errorf("%s: %v\n  %s", what, err, q)
	case len(res) == 0:
		t.Errorf("%s: no data\n  %s", what, q)
	case os.Getenv("SEKISHO_DASHBOARD_DEBUG") != "":
		t.Logf("%s: %v", what, res)
	case !byInstance.MatchString(expr):
		for _, s := range res {
			if _, ok := s.Metric["instance"]; ok {
				t.Errorf("%s: a fleet view must sum over instances, got %v\n  %s", what, s.Metric, q)
				break
			}
		}
	}
}

// checkAlertRules requires every rule of the file loaded and evaluated
// without error, and the alerts that the final state of the known
// sequence raises (a failed reload of the rules and of sekisho.yaml,
// report-only mode, the test database built in January 2026) to be
// pending or firing — and no other: one upstream_tls error and one domain
// fronting attempt are below their alerts' thresholds, and the CA has ten
// years left.
func checkAlertRules(t *testing.T, prom *promServer, file, instance string) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rf struct {
		Groups []struct {
			Rules []map[string]any `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, g := range rf.Groups {
		want += len(g.Rules)
	}
	type rule struct {
		Name      string `json:"name"`
		Health    string `json:"health"`
		LastError string `json:"lastError"`
	}
	var data struct {
		Groups []struct {
			Rules []rule `json:"rules"`
		} `json:"groups"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := prom.api(t, "/api/v1/rules", nil, &data); err != nil {
			t.Fatal(err)
		}
		var rules []rule
		for _, g := range data.Groups {
			rules = append(rules, g.Rules...)
		}
		ok := len(rules) == want
		for _, r := range rules {
			if r.Health == "err" {
				t.Fatalf("rule %s: %s", r.Name, r.LastError)
			}
			ok = ok && r.Health == "ok"
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus loaded %d of %d rules, not all evaluated: %+v", len(rules), want, rules)
		}
		time.Sleep(200 * time.Millisecond)
	}

	wantActive := []string{"SekishoConfigReloadFailing", "SekishoGeoDatabaseOld", "SekishoReportOnlyLeftOn", "SekishoRulesReloadFailing"}
	var active []string
	deadline = time.Now().Add(15 * time.Second)
	for {
		var alerts struct {
			Alerts []struct {
				Labels map[string]string `json:"labels"`
				State  string            `json:"state"`
			} `json:"alerts"`
		}
		if err := prom.api(t, "/api/v1/alerts", nil, &alerts); err != nil {
			t.Fatal(err)
		}
		active = active[:0]
		for _, a := range alerts.Alerts {
			name := a.Labels["alertname"]
			if name == "SekishoNoTrafficInOfficeHours" {
				// Pending when the test runs on a weekday between 10:00
				// and 17:00 JST: the counters stand still after the
				// traffic, as they would if clients bypassed the proxy.
				continue
			}
			if a.Labels["instance"] != instance || a.Labels["job"] != "sekisho" {
				t.Errorf("alert %v is not about the sekisho scraped", a.Labels)
			}
			active = append(active, name)
		}
		slices.Sort(active)
		if slices.Equal(active, wantActive) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("active alerts %v, want %v", active, wantActive)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
