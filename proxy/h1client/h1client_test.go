package h1client_test

import (
	"bufio"
	"context"
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
	resp, err := cl.RoundTrip(get(t, method, "http://"+ap.String()+path), ap)
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
	resp, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap)
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
	if _, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap); err == nil || !strings.Contains(err.Error(), "switched protocols") {
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
	_, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap)
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
	if _, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/"), ap); err == nil || !strings.Contains(err.Error(), "header too large") {
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
	if _, err := cl.RoundTrip(req, ap); !errors.Is(err, context.Canceled) {
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
			resp, err := cl.RoundTrip(get(t, "GET", "http://"+ap.String()+"/wait"), ap)
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
		{"GET", "https://example.org/", nil, "", false},
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
