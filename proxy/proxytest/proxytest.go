// Package proxytest is the end-to-end harness for sekisho: a proxy.Server on
// 127.0.0.1:0 with a test geo database, a static resolver, and upstream
// servers on loopback addresses that the database places in Japan, Korea,
// China, the United States and nowhere — each recording every raw byte it
// receives, so that a test of a block can assert that the foreign upstream
// received zero bytes of the body.
//
// All traffic stays on loopback. Import it only from tests.
package proxytest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/geo/geotest"
	"github.com/sekisho/sekisho/proxy"
	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/proxy/mitm"
	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/rules"
)

// The loopback addresses of the test sites and where the test database
// places them (geotest.Default).
var (
	AddrJP      = netip.MustParseAddr("127.0.1.1")
	AddrKR      = netip.MustParseAddr("127.0.2.1")
	AddrCN      = netip.MustParseAddr("127.0.3.1")
	AddrUS      = netip.MustParseAddr("127.0.4.1")
	AddrUnknown = netip.MustParseAddr("127.0.5.1")
	AddrJP6     = netip.MustParseAddr("::1")
)

// Resolver is a static name → addresses map (a dial.Resolver).
type Resolver map[string][]netip.Addr

// LookupNetIP answers from the map; unknown names are "no such host".
func (r Resolver) LookupNetIP(ctx context.Context, _, host string) ([]netip.Addr, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// DefaultResolver maps the test names:
//
//	jp.example, kr.example, cn.example, us.example, unknown.example → that site
//	mixed.example    → KR first, then JP (the proxy must pick JP)
//	metadata.example → 169.254.169.254 (must be refused)
//	upload.line-scdn.net → JP (a catalog service's host on a domestic edge)
//	wrongname.example → the US site, whose TLS certificate does not name it
func DefaultResolver() Resolver {
	return Resolver{
		"jp.example":           {AddrJP},
		"kr.example":           {AddrKR},
		"cn.example":           {AddrCN},
		"us.example":           {AddrUS},
		"unknown.example":      {AddrUnknown},
		"mixed.example":        {AddrKR, AddrJP},
		"metadata.example":     {netip.MustParseAddr("169.254.169.254")},
		"upload.line-scdn.net": {AddrJP},
		"obs.line-scdn.net":    {AddrJP},
		"v6.example":           {AddrJP6},
		"wrongname.example":    {AddrUS},
	}
}

// Upstream is a test web server on one loopback address that records every
// raw byte it receives and the request bodies its handler read.
type Upstream struct {
	Name string
	Addr netip.AddrPort
	srv  *http.Server
	ln   net.Listener

	mu     sync.Mutex
	raw    bytes.Buffer
	conns  int
	bodies [][]byte
	reqs   []*http.Request
}

// Received returns a copy of every byte received so far, on every
// connection.
func (u *Upstream) Received() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]byte(nil), u.raw.Bytes()...)
}

// Conns is the number of connections accepted so far.
func (u *Upstream) Conns() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.conns
}

// Bodies returns the request bodies received, in order.
func (u *Upstream) Bodies() [][]byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([][]byte(nil), u.bodies...)
}

// Requests returns the requests received (headers only), in order.
func (u *Upstream) Requests() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*http.Request(nil), u.reqs...)
}

type recordingConn struct {
	net.Conn
	u *Upstream
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.u.mu.Lock()
		c.u.raw.Write(p[:n])
		c.u.mu.Unlock()
	}
	return n, err
}

type recordingListener struct {
	net.Listener
	u *Upstream
}

func (l *recordingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.u.mu.Lock()
	l.u.conns++
	l.u.mu.Unlock()
	return &recordingConn{Conn: c, u: l.u}, nil
}

// ServeHTTP reads the whole body and answers 200 with a summary:
// "<name> <method> <path> <n> <sha256>". /big?n=N answers N zero bytes;
// /slow waits a second before answering; /ws accepts a WebSocket upgrade,
// greets, and then reads (and records) whatever the client sends; GET
// /form is an upload form (see FormPage).
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/form" && r.Method == http.MethodGet {
		u.mu.Lock()
		u.bodies = append(u.bodies, nil)
		u.reqs = append(u.reqs, r)
		u.mu.Unlock()
		page := FormPage(u.Name, r.URL.Query().Get("auto") == "1")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		_, _ = w.Write(page)
		return
	}
	if r.URL.Path == "/ws" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		u.mu.Lock()
		u.reqs = append(u.reqs, r)
		u.mu.Unlock()
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello from " + u.Name + "\n")
		_ = brw.Flush()
		_, _ = io.Copy(io.Discard, brw)
		return
	}
	if r.URL.Path == "/slow" {
		time.Sleep(time.Second)
	}
	body, err := io.ReadAll(r.Body)
	u.mu.Lock()
	u.bodies = append(u.bodies, body)
	u.reqs = append(u.reqs, r)
	u.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.URL.Path == "/big" {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		_, _ = io.CopyN(w, zeroReader{}, int64(n))
		return
	}
	sum := sha256.Sum256(body)
	fmt.Fprintf(w, "%s %s %s %d %s\n", u.Name, r.Method, r.URL.Path, len(body), hex.EncodeToString(sum[:]))
}

// UploadFile is the file the upload form attaches: 96 KiB of fixed
// pseudo-random bytes (every byte value, none of it text) after a line of
// Japanese, so that a byte-exact comparison notices any re-encoding.
var UploadFile = sync.OnceValue(func() []byte {
	head := []byte("住民データ（テスト） residents' data, test file\r\n")
	rng := rand.New(rand.NewPCG(2021, 3))
	b := make([]byte, len(head)+96<<10)
	copy(b, head)
	for i := len(head); i < len(b); i++ {
		b[i] = byte(rng.Uint32())
	}
	return b
})

// FormPage is an upload form as a city hall's staff meet it: a file input
// in a multipart form posting to /upload. With auto, a script attaches
// UploadFile as "residents.bin" (a File built through DataTransfer, which
// the browser then encodes like a file the user picked) and submits the
// form when the page loads.
func FormPage(site string, auto bool) []byte {
	var b bytes.Buffer
	b.WriteString(`<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><title>アップロード / Upload — test site ` + site + `</title></head>
<body><h1>アップロード / Upload (` + site + `)</h1>
<form id="form" method="post" action="/upload" enctype="multipart/form-data" data-file="` + base64.StdEncoding.EncodeToString(UploadFile()) + `">
<input type="text" name="note" value="住民一覧"> <input type="file" name="file" id="file"> <button>送信 / Send</button>
</form>
`)
	if auto {
		b.WriteString(`<script>
(function () {
  var form = document.getElementById("form");
  var bin = atob(form.getAttribute("data-file"));
  var bytes = new Uint8Array(bin.length);
  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  var dt = new DataTransfer();
  dt.items.add(new File([bytes], "residents.bin", {type: "application/octet-stream"}));
  document.getElementById("file").files = dt.files;
  form.submit();
})();
</script>
`)
	}
	b.WriteString("</body></html>\n")
	return b.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Sink is a raw TCP server (a tunnel's far end) that records what it
// receives and writes a greeting when a connection opens.
type Sink struct {
	Addr      netip.AddrPort
	ln        net.Listener
	greeting  []byte
	afterHead bool // greet only after a request head has arrived

	mu    sync.Mutex
	raw   bytes.Buffer
	conns int
}

// SetGreeting sets what the sink writes to each new connection.
func (s *Sink) SetGreeting(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.greeting, s.afterHead = b, false
}

// SetReply sets what the sink writes after it has read a request head
// ("\r\n\r\n"): a raw HTTP answer, such as a 101 for a WebSocket.
func (s *Sink) SetReply(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.greeting, s.afterHead = b, true
}

// Received returns a copy of every byte received.
func (s *Sink) Received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.raw.Bytes()...)
}

// Conns is the number of connections accepted.
func (s *Sink) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

func (s *Sink) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		greeting, afterHead := s.greeting, s.afterHead
		s.mu.Unlock()
		go func() {
			defer c.Close()
			if len(greeting) > 0 && !afterHead {
				_, _ = c.Write(greeting)
			}
			var seen []byte // this connection's bytes until the head ends
			buf := make([]byte, 32<<10)
			for {
				n, err := c.Read(buf)
				if n > 0 {
					s.mu.Lock()
					s.raw.Write(buf[:n])
					s.mu.Unlock()
					if afterHead && len(greeting) > 0 {
						seen = append(seen, buf[:n]...)
						if bytes.Contains(seen, []byte("\r\n\r\n")) {
							go func(g []byte) { _, _ = c.Write(g) }(greeting)
							greeting, seen = nil, nil
						}
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// Options changes the harness's defaults.
type Options struct {
	// Rules is a rules file's contents; empty means the built-in defaults.
	Rules string
	// AllowedClients overrides the client networks (default: loopback).
	AllowedClients []netip.Prefix
	// Limits for the proxy.
	Limits proxy.Limits
	// Resolver replaces DefaultResolver.
	Resolver Resolver
	// Intercept creates a sekisho CA and turns TLS interception on (the
	// rules' inspection section says where). The proxy trusts the test
	// upstream CA.
	Intercept bool
	// PAC is the PAC file's configuration; its Proxies default to the
	// proxy's own address.
	PAC pages.PACConfig
}

// Sites are the test web servers (one per country, all on the same port)
// and raw TCP sinks (for tunnels).
type Sites struct {
	Port    int // the port every test web server listens on
	TLSPort int // the port of the same sites over TLS (TestUpstreamCA)

	JP, KR, CN, US, Unknown, JP6 *Upstream
	// Sinks are raw TCP servers on the JP and KR addresses, on SinkPort.
	SinkJP, SinkKR *Sink
	SinkPort       int
}

// URL is "http://<host>:<Port><path>" for a test site name.
func (s *Sites) URL(host, path string) string {
	return "http://" + net.JoinHostPort(host, strconv.Itoa(s.Port)) + path
}

// TLSURL is "https://<host>:<TLSPort><path>".
func (s *Sites) TLSURL(host, path string) string {
	return "https://" + net.JoinHostPort(host, strconv.Itoa(s.TLSPort)) + path
}

// NewSites starts the test servers; they stop when the test ends.
func NewSites(t testing.TB) *Sites {
	t.Helper()
	s := &Sites{}
	sites := []struct {
		dst  **Upstream
		name string
		addr netip.Addr
	}{
		{&s.JP, "JP", AddrJP}, {&s.KR, "KR", AddrKR}, {&s.CN, "CN", AddrCN},
		{&s.US, "US", AddrUS}, {&s.Unknown, "unknown", AddrUnknown}, {&s.JP6, "JP6", AddrJP6},
	}
	// One port for every site, so that a name with a Korean and a Japanese
	// address works with one URL.
	var lns []net.Listener
	s.Port, lns = listenAll(t, len(sites), func(i int) netip.Addr { return sites[i].addr })
	for i, site := range sites {
		u := &Upstream{Name: site.name, Addr: netip.AddrPortFrom(site.addr, uint16(s.Port))}
		u.ln = &recordingListener{Listener: lns[i], u: u}
		u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = u.srv.Serve(u.ln) }()
		t.Cleanup(func() { _ = u.srv.Close() })
		*site.dst = u
	}
	// The same sites over TLS, on TLSPort, recording into the same
	// Upstream (raw bytes are then the encrypted ones).
	s.TLSPort, lns = listenAll(t, len(sites), func(i int) netip.Addr { return sites[i].addr })
	for i, site := range sites {
		u := *site.dst
		rl := &recordingListener{Listener: lns[i], u: u}
		srv := &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second, TLSConfig: siteTLSConfig()}
		go func() { _ = srv.ServeTLS(rl, "", "") }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	sinkAddrs := []netip.Addr{AddrJP, AddrKR}
	s.SinkPort, lns = listenAll(t, 2, func(i int) netip.Addr { return sinkAddrs[i] })
	for i, dst := range []**Sink{&s.SinkJP, &s.SinkKR} {
		k := &Sink{Addr: netip.AddrPortFrom(sinkAddrs[i], uint16(s.SinkPort)), ln: lns[i]}
		go k.serve()
		t.Cleanup(func() { _ = k.ln.Close() })
		*dst = k
	}
	return s
}

// TestDeny is dial.DefaultDeny without loopback: the test sites are on
// loopback, the metadata and link-local ranges stay denied.
func TestDeny() []netip.Prefix {
	deny := []netip.Prefix{}
	for _, p := range dial.DefaultDeny() {
		if !p.Addr().IsLoopback() {
			deny = append(deny, p)
		}
	}
	return deny
}

// TestAllow lets the proxy dial the loopback test sites despite the default
// deny list (which keeps metadata and link-local denied).
func TestAllow() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// Harness is a running proxy with its test sites.
type Harness struct {
	*Sites
	Proxy    *proxy.Server
	Addr     string   // proxy address, host:port
	ProxyURL *url.URL // http://addr

	Rules    *rules.Store
	Geo      *geo.Store
	Registry *prometheus.Registry
	Resolver Resolver
	// CA and Issuer are set when Options.Intercept is.
	CA     *mitm.CA
	Issuer *mitm.Issuer

	auditMu sync.Mutex
	audit   bytes.Buffer

	lookupsMu sync.Mutex
	lookups   []string
}

// Lookups returns the names the proxy asked the resolver for, in order.
func (h *Harness) Lookups() []string {
	h.lookupsMu.Lock()
	defer h.lookupsMu.Unlock()
	return append([]string(nil), h.lookups...)
}

// recordingResolver is the harness's resolver: it notes every name asked.
type recordingResolver struct{ h *Harness }

func (r recordingResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.h.lookupsMu.Lock()
	r.h.lookups = append(r.h.lookups, host)
	r.h.lookupsMu.Unlock()
	return r.h.Resolver.LookupNetIP(ctx, network, host)
}

// Audit returns the audit log written so far (JSON lines).
func (h *Harness) Audit() string {
	h.auditMu.Lock()
	defer h.auditMu.Unlock()
	return h.audit.String()
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// New starts the harness; everything stops when the test ends.
func New(t testing.TB, opt Options) *Harness {
	t.Helper()
	h := &Harness{Registry: prometheus.NewRegistry()}
	h.Resolver = opt.Resolver
	if h.Resolver == nil {
		h.Resolver = DefaultResolver()
	}

	mmdb, err := geotest.Build(geotest.CountryCode, geotest.Default)
	if err != nil {
		t.Fatalf("test geo database: %v", err)
	}
	db, err := geo.OpenBytes("geotest", mmdb)
	if err != nil {
		t.Fatalf("open test geo database: %v", err)
	}
	// 127.0.5.0/24 must stay unknown (not internal): only 10/8 is internal here.
	h.Geo = geo.NewStore(db, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, h.Registry)

	src := rules.DefaultSources()
	if opt.Rules != "" {
		src = []rules.Source{{Name: "test-rules.yaml", Data: []byte(opt.Rules)}}
	}
	set, err := rules.Compile(src)
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	h.Rules = rules.NewStore(set, h.Registry)
	h.Sites = NewSites(t)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self, _ := netip.ParseAddrPort(ln.Addr().String())
	allowed := opt.AllowedClients
	if allowed == nil {
		allowed = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	var roots *x509.CertPool
	if opt.Intercept {
		ca, err := mitm.InitCA(t.TempDir(), "Sekisho Test City", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		h.CA = ca
		h.Issuer, err = mitm.NewIssuer(ca, mitm.IssuerOptions{}, h.Registry)
		if err != nil {
			t.Fatal(err)
		}
		roots = TestUpstreamCA().Pool
	}
	pacCfg := opt.PAC
	if len(pacCfg.Proxies) == 0 {
		pacCfg.Proxies = []string{ln.Addr().String()}
	}
	pac, err := pages.NewPAC(pacCfg)
	if err != nil {
		t.Fatalf("PAC: %v", err)
	}
	srv, err := proxy.New(proxy.Config{
		Issuer:            h.Issuer,
		UpstreamRoots:     roots,
		Rules:             h.Rules,
		Geo:               h.Geo,
		Resolver:          recordingResolver{h},
		PAC:               pac,
		AllowedClients:    allowed,
		AllowDestinations: TestAllow(),
		Self:              []netip.AddrPort{self},
		Audit:             audit.New(lockedWriter{&h.auditMu, &h.audit}),
		Registerer:        h.Registry,
		Helpdesk:          "情報政策課 (内線 1234)",
		Limits:            opt.Limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.Proxy = srv
	h.Addr = ln.Addr().String()
	h.ProxyURL = &url.URL{Scheme: "http", Host: h.Addr}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return h
}

// listenAll finds a port free on every one of n addresses and listens on
// all of them.
func listenAll(t testing.TB, n int, addr func(int) netip.Addr) (int, []net.Listener) {
	t.Helper()
	for attempt := 0; attempt < 200; attempt++ {
		port := 20000 + rand.IntN(40000)
		var lns []net.Listener
		ok := true
		for i := 0; i < n; i++ {
			ln, err := net.Listen("tcp", netip.AddrPortFrom(addr(i), uint16(port)).String())
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		if ok {
			return port, lns
		}
		for _, ln := range lns {
			_ = ln.Close()
		}
	}
	t.Fatal("no port free on every test address")
	return 0, nil
}

// Client is a Go HTTP client that uses the proxy, with keep-alives off so
// that every request is decided on a fresh connection unless a test wants
// otherwise.
func (h *Harness) Client() *http.Client {
	return &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(h.ProxyURL), DisableKeepAlives: true},
		Timeout:   20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// TLSClient is a Go HTTP client through the proxy that trusts sekisho's CA
// (as rolled-out PCs do) and, unless intercepting is off, nothing else.
func (h *Harness) TLSClient() *http.Client {
	pool := x509.NewCertPool()
	if h.CA != nil {
		pool.AddCert(h.CA.Cert)
	}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:             http.ProxyURL(h.ProxyURL),
			DisableKeepAlives: true,
			TLSClientConfig:   &tls.Config{RootCAs: pool},
		},
		Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Raw opens a TCP connection to the proxy for hand-written requests.
func (h *Harness) Raw(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return c
}
