package h1client_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy/h1client"
)

func dialer(t testing.TB) func(context.Context, netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return func(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", ap.String())
	}
}

// server is an httptest server that counts the connections it accepted.
func server(t *testing.T, h http.HandlerFunc) (*httptest.Server, netip.AddrPort, *atomic.Int64) {
	t.Helper()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String()), &conns
}

func get(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func roundTrip(t *testing.T, cl *h1client.Client, ap netip.AddrPort, method, path string) (int, string) {
	t.Helper()
	resp, err := cl.RoundTrip(get(t, method, "http://"+ap.String()+path), ap, "")
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

// TestReuse: a body read to its end returns the connection to the pool,
// for plain, chunked (with a trailer), HEAD and 304 responses.
func TestReuse(t *testing.T) {
	_, ap, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			w.WriteHeader(200)
			w.(http.Flusher).Flush()
			io.WriteString(w, "part one, ")
			w.(http.Flusher).Flush()
			io.WriteString(w, "part two")
			w.Header().Set("X-Sum", "42")
		case "/304":
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	})
	cl := &h1client.Client{Dial: dialer(t)}
	for _, c := range []struct{ method, path, want string }{
		{"GET", "/", "hello"}, {"GET", "/chunked", "part one, part two"},
		{"HEAD", "/", ""}, {"GET", "/304", ""}, {"GET", "/", "hello"},
	} {
		if _, body := roundTrip(t, cl, ap, c.method, c.path); body != c.want {
			t.Errorf("%s %s = %q, want %q", c.method, c.path, body, c.want)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("server saw %d connections, want 1 (kept alive)", n)
	}
	if n := cl.IdleConns(); n != 1 {
		t.Errorf("pool holds %d connections, want 1", n)
	}
}

// TestUnreadBodyClosesConn: closing a body before its end closes the
// connection rather than reading the rest or reusing it mid-response.
func TestUnreadBodyClosesConn(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	_, ap, conns := server(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, big)
	})
	cl := &h1client.Client{Dial: dialer(t)}
	resp, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap, "")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := cl.IdleConns(); n != 0 {
		t.Errorf("pool holds %d connections after a half-read body", n)
	}
	if _, body := roundTrip(t, cl, ap, "GET", "/"); len(body) != len(big) {
		t.Errorf("second body %d bytes", len(body))
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("server saw %d connections, want 2", n)
	}
}

// TestConnectionCloseNotPooled: "Connection: close" from the server ends
// the connection.
func TestConnectionCloseNotPooled(t *testing.T) {
	_, ap, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	})
	cl := &h1client.Client{Dial: dialer(t)}
	if _, body := roundTrip(t, cl, ap, "GET", "/"); body != "bye" {
		t.Fatalf("body %q", body)
	}
	if n := cl.IdleConns(); n != 0 {
		t.Errorf("pool holds %d connections after Connection: close", n)
	}
}

// rawServer answers each connection with fn.
func rawServer(t *testing.T, fn func(c net.Conn, br *bufio.Reader)) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var conns atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), &conns
}

func readRequest(t *testing.T, br *bufio.Reader) bool {
	req, err := http.ReadRequest(br)
	if err != nil {
		return false
	}
	req.Body.Close()
	return true
}

// TestStalePooledConnRetried: a server that closes a kept-alive connection
// without saying so (its idle timeout) costs no failed request: the GET is
// sent again on a new connection.
func TestStalePooledConnRetried(t *testing.T) {
	ap, conns := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
		// then close, as an idle timeout would
	})
	cl := &h1client.Client{Dial: dialer(t)}
	for i := range 3 {
		if _, body := roundTrip(t, cl, ap, "GET", "/"); body != "ok" {
			t.Fatalf("request %d: body %q", i, body)
		}
		time.Sleep(20 * time.Millisecond) // let the close arrive
	}
	if n := conns.Load(); n != 3 {
		t.Errorf("server saw %d connections, want 3", n)
	}
}

// TestEarlyHintsSkipped: 1xx responses before the final one are read past.
func TestEarlyHintsSkipped(t *testing.T) {
	ap, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) {
			io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal")
		}
	})
	cl := &h1client.Client{Dial: dialer(t)}
	if code, body := roundTrip(t, cl, ap, "GET", "/"); code != 200 || body != "real" {
		t.Errorf("got %d %q", code, body)
	}
}

// TestUnaskedSwitchingProtocols: a 101 to a request without Upgrade is an
// error, never a raw stream.
func TestUnaskedSwitchingProtocols(t *testing.T) {
	ap, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
			time.Sleep(time.Second)
		}
	})
	cl := &h1client.Client{Dial: dialer(t)}
	if _, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap, ""); err == nil || !strings.Contains(err.Error(), "switched protocols") {
		t.Errorf("err = %v", err)
	}
}

// TestResponseHeaderTimeout: a server that never answers gets a timeout
// error that says so.
func TestResponseHeaderTimeout(t *testing.T) {
	ap, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequest(t, br)
		time.Sleep(2 * time.Second)
	})
	cl := &h1client.Client{Dial: dialer(t), ResponseHeaderTimeout: 100 * time.Millisecond}
	start := time.Now()
	_, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap, "")
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() || !strings.Contains(err.Error(), "awaiting response headers") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
}

// TestHeaderTooLarge: an endless response head is cut off at the limit.
func TestHeaderTooLarge(t *testing.T) {
	ap, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if readRequest(t, br) {
			io.WriteString(c, "HTTP/1.1 200 OK\r\n")
			line := "X-Junk: " + strings.Repeat("a", 1000) + "\r\n"
			for range 1000 {
				if _, err := io.WriteString(c, line); err != nil {
					return
				}
			}
		}
	})
	cl := &h1client.Client{Dial: dialer(t), MaxResponseHeaderBytes: 16 << 10}
	if _, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap, ""); err == nil || !strings.Contains(err.Error(), "header too large") {
		t.Errorf("err = %v", err)
	}
}

// TestCancel: cancelling the request's context (the client went away)
// unblocks the wait for the response at once.
func TestCancel(t *testing.T) {
	ap, _ := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		readRequest(t, br)
		time.Sleep(2 * time.Second)
	})
	cl := &h1client.Client{Dial: dialer(t)}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	req := get(t, "GET", "http://"+ap.String()+"/").WithContext(ctx)
	start := time.Now()
	if _, err := cl.RoundTrip(req, ap, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
}

// TestIdleTimeoutAndLimits: pooled connections expire, the pool keeps at
// most MaxIdlePerAddr, and after CloseIdleConnections(true) nothing is
// pooled.
func TestIdleTimeoutAndLimits(t *testing.T) {
	release := make(chan struct{})
	_, ap, _ := server(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-release
		}
		io.WriteString(w, "ok")
	})
	cl := &h1client.Client{Dial: dialer(t), MaxIdlePerAddr: 2, IdleTimeout: 200 * time.Millisecond}
	// Three requests at once need three connections; two are kept.
	done := make(chan struct{})
	for range 3 {
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/wait"), ap, "")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}()
	}
	time.Sleep(100 * time.Millisecond)
	close(release)
	for range 3 {
		<-done
	}
	if n := cl.IdleConns(); n != 2 {
		t.Errorf("pool holds %d, want 2 (MaxIdlePerAddr)", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for cl.IdleConns() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := cl.IdleConns(); n != 0 {
		t.Errorf("pool holds %d after the idle timeout", n)
	}
	roundTrip(t, cl, ap, "GET", "/")
	cl.CloseIdleConnections(true)
	roundTrip(t, cl, ap, "GET", "/")
	if n := cl.IdleConns(); n != 0 {
		t.Errorf("pool holds %d after shutdown", n)
	}
}

func TestEligible(t *testing.T) {
	for _, c := range []struct {
		method, url string
		body        io.Reader
		hdr         string
		want        bool
	}{
		{"GET", "http://example.org/", nil, "", true},
		{"HEAD", "http://example.org/", nil, "", true},
		{"POST", "http://example.org/", strings.NewReader("x"), "", false},
		{"GET", "http://example.org/", strings.NewReader("x"), "", false},
		{"DELETE", "http://example.org/", nil, "", false},
		{"GET", "https://example.org/", nil, "", true},
		{"GET", "ftp://example.org/", nil, "", false},
		{"GET", "http://example.org/", nil, "websocket", false},
	} {
		req, _ := http.NewRequest(c.method, c.url, c.body)
		if c.hdr != "" {
			req.Header.Set("Upgrade", c.hdr)
		}
		if got := h1client.Eligible(req); got != c.want {
			t.Errorf("%s %s body=%v upgrade=%q: %v, want %v", c.method, c.url, c.body != nil, c.hdr, got, c.want)
		}
	}
}

// tlsServer is an httptest TLS server (its certificate is for example.com
// and 127.0.0.1) that counts the TLS handshakes it completed.
func tlsServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, netip.AddrPort, *atomic.Int64) {
	t.Helper()
	var handshakes atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{VerifyConnection: func(tls.ConnectionState) error { handshakes.Add(1); return nil }}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String()), &handshakes
}

func tlsClient(t *testing.T, srv *httptest.Server) *h1client.Client {
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	return &h1client.Client{Dial: dialer(t), TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
}

func tlsGet(t *testing.T, cl *h1client.Client, ap netip.AddrPort, name, path string) (*http.Response, error) {
	t.Helper()
	req := get(t, "GET", "https://"+name+path)
	resp, err := cl.RoundTrip(req, ap, name)
	if err != nil {
		return nil, err
	}
	b, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil {
		t.Fatalf("GET %s body: %v", path, rerr)
	}
	resp.Body = io.NopCloser(strings.NewReader(string(b)))
	return resp, nil
}

// TestTLSReuse: kept-alive TLS requests share one verified connection,
// which is pooled under its name: another name on the same address gets
// its own connection (and its own verification).
func TestTLSReuse(t *testing.T) {
	srv, ap, handshakes := tlsServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || r.TLS.NegotiatedProtocol != "http/1.1" {
			t.Errorf("request over %+v, want TLS with ALPN http/1.1", r.TLS)
		}
		io.WriteString(w, "host="+r.Host)
	})
	cl := tlsClient(t, srv)
	for i := 0; i < 3; i++ {
		resp, err := tlsGet(t, cl, ap, "example.com", "/x")
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := io.ReadAll(resp.Body); string(b) != "host=example.com" {
			t.Fatalf("body %q", b)
		}
	}
	if n := handshakes.Load(); n != 1 {
		t.Errorf("%d TLS handshakes for 3 kept-alive requests, want 1", n)
	}
	if _, err := tlsGet(t, cl, ap, "127.0.0.1", "/"); err != nil {
		t.Fatal(err)
	}
	if n := handshakes.Load(); n != 2 {
		t.Errorf("%d TLS handshakes after a request for another name, want 2", n)
	}
	if n := cl.IdleConns(); n != 2 {
		t.Errorf("%d pooled connections, want 2 (one per name)", n)
	}
}

// TestTLSVerification: an untrusted certificate, or one for another name,
// fails with the verification error (which sekisho's 502 page names), and
// no request is sent.
func TestTLSVerification(t *testing.T) {
	var requests atomic.Int64
	srv, ap, _ := tlsServer(t, func(w http.ResponseWriter, r *http.Request) { requests.Add(1) })
	var certErr *tls.CertificateVerificationError

	untrusted := &h1client.Client{Dial: dialer(t), TLSConfig: &tls.Config{RootCAs: x509.NewCertPool()}}
	_, err := tlsGet(t, untrusted, ap, "example.com", "/")
	if !errors.As(err, &certErr) {
		t.Errorf("untrusted certificate: %v, want a *tls.CertificateVerificationError", err)
	}
	_, err = tlsGet(t, tlsClient(t, srv), ap, "other.example", "/")
	if !errors.As(err, &certErr) || !strings.Contains(err.Error(), "other.example") {
		t.Errorf("certificate for another name: %v, want a verification error naming other.example", err)
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("server got %d requests over unverified connections", n)
	}
	if _, err := untrusted.RoundTrip(get(t, "GET", "https://example.com/"), ap, ""); err == nil {
		t.Error("https request without a TLS name: no error")
	}
}

// TestTLSStaleConnRetried: a pooled TLS connection that the server closed
// while idle (close_notify) costs a new connection, not an error.
func TestTLSStaleConnRetried(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ap := netip.MustParseAddrPort(srv.Listener.Addr().String())
	cl := tlsClient(t, srv)
	for i := 0; i < 2; i++ {
		if _, err := tlsGet(t, cl, ap, "example.com", "/"); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		time.Sleep(100 * time.Millisecond) // the server closes the idle connection
	}
}

// TestMaxIdleEvictsLeastRecent: beyond MaxIdle pooled connections in all,
// the least recently pooled one is closed, and the busy address keeps its
// connection.
func TestMaxIdleEvictsLeastRecent(t *testing.T) {
	cl := &h1client.Client{Dial: dialer(t), MaxIdle: 2}
	var aps []netip.AddrPort
	var conns []*atomic.Int64
	for range 3 {
		_, ap, n := server(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		aps, conns = append(aps, ap), append(conns, n)
	}
	roundTrip(t, cl, aps[0], "GET", "/")
	roundTrip(t, cl, aps[1], "GET", "/")
	roundTrip(t, cl, aps[0], "GET", "/") // aps[0] is now the most recent
	roundTrip(t, cl, aps[2], "GET", "/") // evicts aps[1]'s connection
	if n := cl.IdleConns(); n != 2 {
		t.Fatalf("pool holds %d, want MaxIdle 2", n)
	}
	roundTrip(t, cl, aps[0], "GET", "/")
	roundTrip(t, cl, aps[1], "GET", "/")
	if a, b := conns[0].Load(), conns[1].Load(); a != 1 || b != 2 {
		t.Errorf("connections accepted: %d by the recently used server (want 1), %d by the evicted one (want 2)", a, b)
	}
}

// TestBytesAfterResponseNotReused: bytes a server sends after its
// response (here a whole unsolicited second response) must not become the
// answer to the next request on the pooled connection, which may be
// another client's: the connection is dropped instead.
func TestBytesAfterResponseNotReused(t *testing.T) {
	ap, conns := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/evil" {
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
				time.Sleep(50 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ngenuine")
		}
	})
	cl := &h1client.Client{Dial: dialer(t)}
	if _, body := roundTrip(t, cl, ap, "GET", "/evil"); body != "hello" {
		t.Fatalf("first response %q", body)
	}
	time.Sleep(200 * time.Millisecond) // the unsolicited response is in
	if _, body := roundTrip(t, cl, ap, "GET", "/victim"); body != "genuine" {
		t.Errorf("the next request got %q", body)
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the tainted one dropped)", n)
	}
}
