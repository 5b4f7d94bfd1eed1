package proxy_test

// Adversarial tests from a review of the proxy: TestAdversarial_* each
// demonstrated a way around a guarantee (and failed before its fix; the
// comment above each describes the attack); TestHolds_* record guarantees
// the review tried to break and could not.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/geo/geotest"
	"github.com/sekisho/sekisho/proxy"
	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/proxy/proxytest"
	"github.com/sekisho/sekisho/rules"
)

// A request that merely carries WebSocket upgrade headers is treated as a
// stream: rules with body conditions ("upload: true") never match streams,
// and the request body is forwarded through reqBody with no budget at all.
func TestAdversarial_UpgradeHeadersSmuggleUploadAbroad(t *testing.T) {
	for _, method := range []string{"POST", "GET"} {
		t.Run(method, func(t *testing.T) {
			h := proxytest.New(t, proxytest.Options{})
			c := h.Raw(t)
			m := marker(t)
			body := m + strings.Repeat("x", 2<<20) // 2 MiB: beyond even the 1 MiB stream budget
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: kr.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
				"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s",
				method, h.URL("kr.example", "/upload"), len(body), body)
			// The answer itself may be lost (see
			// TestAdversarial_WebSocketRefusalAnswerIsLost); what matters
			// here is what reached the foreign server.
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode/100 != 4 {
				t.Errorf("status %d, want 403 (or 400: a WebSocket handshake has no body)", resp.StatusCode)
			}
			time.Sleep(100 * time.Millisecond)
			if got := h.KR.Received(); bytes.Contains(got, []byte(m)) {
				t.Errorf("the foreign upstream received the body of an upload abroad (%d bytes in all): "+
					"Upgrade: websocket turns the request into a stream, and the upload rule never matches streams", len(afterHead(got)))
			}
		})
	}
}

// ServeHTTP closes the client connection whenever st.mode is "websocket",
// as soon as goproxy returns — also when goproxy did not hijack it because
// the answer was a block page, a refusal or an upstream's non-101 answer.
// That answer is still in net/http's buffer: the client gets EOF instead of
// the block page the design promises.
func TestAdversarial_WebSocketRefusalAnswerIsLost(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: `
version: 1
rules:
  - name: no-korea
    countries: [KR]
    action: block
`})
	ws := func(t *testing.T, host, path string) (*http.Response, error) {
		c := h.Raw(t)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", h.URL(host, path), host)
		return http.ReadResponse(bufio.NewReader(c), nil)
	}
	t.Run("blocked by a rule: the block page", func(t *testing.T) {
		resp, err := ws(t, "kr.example", "/ws")
		if err != nil {
			t.Fatalf("no answer at all (%v); want the 403 block page", err)
		}
		if resp.StatusCode != 403 {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	})
	t.Run("unresolvable: the 502 page", func(t *testing.T) {
		resp, err := ws(t, "nx.example", "/ws")
		if err != nil {
			t.Fatalf("no answer at all (%v); want the 502 page", err)
		}
		if resp.StatusCode != 502 {
			t.Fatalf("status %d, want 502", resp.StatusCode)
		}
	})
	t.Run("upstream declines the upgrade: its answer", func(t *testing.T) {
		resp, err := ws(t, "jp.example", "/not-a-websocket")
		if err != nil {
			t.Fatalf("no answer at all (%v); want the upstream's 200", err)
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d, want 200", resp.StatusCode)
		}
	})
}

// reqBody sets a read deadline on the client connection before each read of
// the body and never clears it. Once the body has ended, net/http starts its
// background read on that connection; when the stale deadline passes, the
// background read fails, net/http cancels the connection's context, and the
// upstream round trip (which runs on the request context) is aborted. Any
// allowed upload whose server takes longer than BodyIdleTimeout to answer
// after receiving the body fails with 502/504.
func TestAdversarial_BodyIdleDeadlineOutlivesBodyAndCancelsSlowUpstream(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Limits: proxy.Limits{BodyIdleTimeout: 300 * time.Millisecond}})
	body := []byte(marker(t))
	resp, text := do(t, h.Client(), newReq(t, "POST", h.URL("jp.example", "/slow"), body, "text/plain"))
	if resp.StatusCode != 200 {
		t.Fatalf("domestic upload to a server that answers after 1s: status %d, want 200 (the client was not idle: "+
			"its body was complete long ago)\n%.300s", resp.StatusCode, text)
	}
}

// After a held prefix, heldBody reads the rest of the body without the
// per-read deadline that reqBody sets (holdBody even clears the deadline):
// a client that stops sending in the middle of the rest keeps its
// connection, a goroutine and an upstream connection forever.
func TestAdversarial_HeldBodyRestHasNoIdleTimeout(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{
		Rules: `
version: 1
rules:
  - name: log-big-uploads
    min_body_bytes: 1MiB
    action: log
default: allow
`,
		Limits: proxy.Limits{HoldBodyBytes: 1024, BodyIdleTimeout: 300 * time.Millisecond},
	})
	c := h.Raw(t)
	chunk := strings.Repeat("a", 4000)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: jp.example\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n",
		h.URL("jp.example", "/stall"), len(chunk), chunk)
	// ... and nothing more.
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if n := metricSum(t, h, "sekisho_proxy_held_bodies_total"); n != 1 {
		t.Fatalf("held bodies = %v; the test must exercise the held-body path", n)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open 3s after the client stopped sending its body (BodyIdleTimeout is 300ms)")
	}
}

// finish() clears the client connection's write deadline when the handler
// returns, but a response whose body is at most 512 bytes (block pages,
// error pages, redirects, 304s, small API answers: net/http's
// response.ReadFrom only writes to the socket itself beyond its 512-byte
// sniff prefix) is then still in net/http's buffers: net/http flushes it in
// finishRequest, after the handler, with no deadline (the proxy has no
// WriteTimeout, and net/http only clears the deadline after that flush).
// A client that pipelines requests for small responses and never reads
// pins its connection, its goroutine and a MaxConns slot forever:
// WriteIdleTimeout never applies. (Read-side timeouts are short
// here, so that only a stuck write can keep the connection open.)
func TestAdversarial_FinalFlushHasNoWriteDeadline(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Limits: proxy.Limits{
		WriteIdleTimeout:  300 * time.Millisecond,
		ReadHeaderTimeout: 500 * time.Millisecond,
		IdleTimeout:       500 * time.Millisecond,
		BodyIdleTimeout:   500 * time.Millisecond,
	}})
	c := h.Raw(t)
	_ = c.SetDeadline(time.Time{})
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.URL("jp.example", "/big?n=500"))
	go func() {
		for i := 0; i < 30000; i++ {
			if _, err := io.WriteString(c, req); err != nil {
				return
			}
		}
	}()
	// Wait until the proxy stops answering: its writes to us are stuck.
	lines := func() int { return strings.Count(h.Audit(), "\n") }
	last, stable := -1, 0
	for deadline := time.Now().Add(60 * time.Second); stable < 5; {
		if time.Now().After(deadline) {
			t.Skip("the proxy never stalled; socket buffers too large on this machine")
		}
		time.Sleep(100 * time.Millisecond)
		if n := lines(); n == last {
			stable++
		} else {
			last, stable = n, 0
		}
	}
	if last >= 30000 {
		t.Skip("every response fit in the socket buffers")
	}
	time.Sleep(2 * time.Second) // well beyond WriteIdleTimeout and every read timeout
	if n := metricSum(t, h, "sekisho_proxy_active_connections"); n != 0 {
		var stacks strings.Builder
		_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
		where := "unknown"
		if strings.Contains(stacks.String(), "net/http.(*response).finishRequest") {
			where = "net/http.(*response).finishRequest, after the handler returned"
		}
		t.Errorf("%v client connection(s) still open 2s after the proxy stalled writing to a client that does not read "+
			"(WriteIdleTimeout 300ms) after %d responses; blocked in %s", n, last, where)
	}
}

// The multipart sniffer and real multipart parsers disagree on two
// structures, and in both the sniffer reports a complete form without file
// parts while every parser (Go's mime/multipart, PHP's) reads an image file
// part; a content_types or file_parts rule is then skipped:
//
//   - SniffMultipart takes the first "--boundary" anywhere as the first
//     delimiter, even inside a preamble line: a preamble line "x--B--" looks
//     like the closing delimiter;
//   - partHeaders does not join folded header lines, so a filename on a
//     continuation line of Content-Disposition is not seen.
func TestAdversarial_MultipartSnifferDisagreesWithParsers(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: imageRules})
	const boundary = "BOUNDARY"
	image := func(m string) string { return m + "\xff\xd8\xff\xe0 a JPEG" }
	for _, tc := range []struct {
		name string
		body func(m string) string
	}{
		{"fake close delimiter in the preamble", func(m string) string {
			return "x--" + boundary + "--\r\n" +
				"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n" +
				"Content-Type: image/jpeg\r\n\r\n" + image(m) + "\r\n--" + boundary + "--\r\n"
		}},
		{"filename on a folded header line", func(m string) string {
			return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\";\r\n filename=\"photo.jpg\"\r\n" +
				"Content-Type: image/jpeg\r\n\r\n" + image(m) + "\r\n--" + boundary + "--\r\n"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := marker(t)
			body := []byte(tc.body(m))
			// What a server makes of it: one file part, an image.
			part, err := multipart.NewReader(bytes.NewReader(body), boundary).NextPart()
			if err != nil || part.FileName() != "photo.jpg" || part.Header.Get("Content-Type") != "image/jpeg" {
				t.Fatalf("test body: Go's multipart reader should find the image part: %v", err)
			}
			resp, _ := do(t, h.Client(), newReq(t, "POST", h.URL("jp.example", "/form"), body, "multipart/form-data; boundary="+boundary))
			if resp.StatusCode != 403 {
				t.Errorf("status %d, want 403: the no-images rule was skipped for a form that carries an image part", resp.StatusCode)
			}
			assertNoMarker(t, h.JP, m)
		})
	}
}

// Path rules match the decoded, dot-cleaned path by prefix, case-sensitively.
// Servers that normalise further route these spellings to the protected
// endpoint: Tomcat/Jetty/Spring strip ";params" from every segment, IIS and
// ASP.NET treat "\" as "/" and ignore case.
func TestAdversarial_PathRuleSpellingsServersNormalise(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: `
version: 1
rules:
  - name: no-upload-api
    paths: [/api/upload]
    action: block
`})
	for _, p := range []string{
		"/api;jsessionid=x/upload", // Tomcat, Jetty, Spring: /api/upload
		"/api%5Cupload",            // IIS: \ is /
		"/api\\upload",
		"/API/UPLOAD", // IIS, any case-insensitive file system
	} {
		t.Run(p, func(t *testing.T) {
			c := h.Raw(t)
			fmt.Fprintf(c, "GET http://jp.example:%d%s HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.Port, p)
			resp, text := readResponse(t, bufio.NewReader(c))
			if resp.StatusCode == 400 {
				t.Skipf("net/http refuses this spelling: %.100s", text)
			}
			if resp.StatusCode != 403 {
				t.Errorf("status %d: a path rule for /api/upload let %q through", resp.StatusCode, p)
			}
		})
	}
}

// With a MaxMind-style database (GeoIP2/GeoLite2, which alias 2001::/32 and
// 2002::/16 onto the IPv4 tree), a Teredo address 2001:0:SSSS:SSSS::/64 is
// placed where its Teredo *server* is (bits 32-63), while the host it
// reaches is the Teredo client behind it (its address is in the low 32 bits,
// obfuscated), anywhere in the world. A name whose AAAA is such an address
// is decided as domestic: the upload is allowed and dialed. Transition
// addresses do not say where their host is; they must be unknown.
func TestAdversarial_TeredoAddressTakesItsServersCountry(t *testing.T) {
	data, err := geotest.Build(geotest.GeoIP2Country, geotest.Default)
	if err != nil {
		t.Fatal(err)
	}
	db, err := geo.OpenBytes("geoip2-fixture", data)
	if err != nil {
		t.Fatal(err)
	}
	// Teredo: server 127.0.1.1 (JP in the fixture), client 203.0.113.9
	// (obfuscated: every bit inverted), port 40000 (also inverted).
	teredo := netip.MustParseAddr("2001:0:7f00:101:0:63bf:3400:8cf6")
	if loc := geo.NewStore(db, nil, nil).Lookup(teredo); loc.Country != "JP" {
		t.Skipf("the fixture places %s in %q; nothing to show", teredo, loc.Country)
	}
	set, err := rules.Compile(rules.DefaultSources())
	if err != nil {
		t.Fatal(err)
	}
	var auditBuf bytes.Buffer
	var auditMu sync.Mutex
	srv, err := proxy.New(proxy.Config{
		Rules:            rules.NewStore(set, nil),
		Geo:              geo.NewStore(db, nil, nil),
		Resolver:         proxytest.Resolver{"teredo.example": {teredo}},
		AllowedClients:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		DenyDestinations: proxytest.TestDeny(),
		Audit:            audit.New(writerFunc(func(p []byte) (int, error) { auditMu.Lock(); defer auditMu.Unlock(); return auditBuf.Write(p) })),
		// A dial that gives up at once: the test must not send a packet to
		// a real Teredo address; the decision is what it shows.
		Limits: proxy.Limits{DialTimeout: time.Nanosecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: ln.Addr().String()})}}
	resp, _ := do(t, c, newReq(t, "POST", "http://teredo.example/upload", []byte(marker(t)), "text/plain"))
	auditMu.Lock()
	line := auditBuf.String()
	auditMu.Unlock()
	if resp.StatusCode != 403 {
		t.Errorf("status %d, want 403: an upload to a Teredo address was decided as domestic and dialed\n%s", resp.StatusCode, line)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Shutdown closes a WebSocket "tunnel" by closing only its upstream side
// (rwc), then waits for it to untrack with no bound on the wait. goproxy's
// two copy goroutines are then stuck on the client side — one writing to a
// client that does not read (no write deadline), one reading from a client
// that sends nothing — so the handler never returns, streamBody.Close never
// runs, and Shutdown never returns, whatever its context says.
func TestAdversarial_ShutdownHangsOnWebSocketWithStalledClient(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	// A raw upstream that accepts the upgrade and then pours data down.
	h.SinkJP.SetReply(append([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
		bytes.Repeat([]byte("d"), 16<<20)...))
	c := h.Raw(t)
	_ = c.SetDeadline(time.Time{})
	fmt.Fprintf(c, "GET http://jp.example:%d/ws HTTP/1.1\r\nHost: jp.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", h.SinkPort)
	// The client reads nothing and sends nothing more.
	waitFor(t, func() bool { return metricSum(t, h, "sekisho_proxy_active_tunnels", "mode", "websocket") == 1 })
	time.Sleep(300 * time.Millisecond) // the download fills the socket buffers

	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_ = h.Proxy.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		// Unwedge it for the harness's own cleanup.
		_ = c.Close()
		<-done
		t.Fatal("Shutdown with a 500ms deadline had not returned after 5s: the WebSocket's client side is never closed")
	}
}

// ---------------------------------------------------------------------------
// Suspicions that turned out not to be problems: these tests document the
// guarantees.

// Absolute-form requests: net/http replaces the Host header with the URL's
// authority (RFC 9112 §3.2.2), the decision is on the URL host and the
// upstream sees that same authority.
func TestHolds_AbsoluteFormHostHeaderIsIgnored(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	t.Run("foreign URL, domestic Host header: blocked", func(t *testing.T) {
		c := h.Raw(t)
		m := marker(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: jp.example\r\nContent-Length: %d\r\n\r\n%s", h.URL("kr.example", "/u"), len(m), m)
		resp, _ := readResponse(t, bufio.NewReader(c))
		if resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		assertUntouched(t, h.KR)
		assertNoMarker(t, h.JP, m)
	})
	t.Run("domestic URL, foreign Host header: upstream sees the URL's host", func(t *testing.T) {
		c := h.Raw(t)
		m := marker(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: kr.example\r\nContent-Length: %d\r\n\r\n%s", h.URL("jp.example", "/u"), len(m), m)
		resp, _ := readResponse(t, bufio.NewReader(c))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		reqs := h.JP.Requests()
		if got, want := reqs[len(reqs)-1].Host, fmt.Sprintf("jp.example:%d", h.Port); got != want {
			t.Errorf("upstream Host %q, want %q", got, want)
		}
	})
}

// CONNECT: the tunnel goes where the request target says, whatever the Host
// header says, and the budget is the target's.
func TestHolds_ConnectTargetWinsOverHostHeader(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: budgetRules})
	c := h.Raw(t)
	fmt.Fprintf(c, "CONNECT kr.example:%d HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", h.SinkPort, h.SinkPort)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	_, _ = c.Write(bytes.Repeat([]byte("k"), 5000))
	expectClosed(t, c)
	if got := len(h.SinkKR.Received()); got > 1000 {
		t.Errorf("KR sink received %d bytes; budget 1000", got)
	}
	if h.SinkJP.Conns() != 0 {
		t.Error("the Host header's destination was dialed")
	}
}

const budgetRules = `
version: 1
tunnel_upload_budget:
  foreign: 1000
  domestic: unlimited
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
default: allow
`

func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("connection still open; want it closed by the proxy")
	}
}

// Odd spellings of the authority decide on the address actually dialed.
func TestHolds_OddAuthoritiesDecideOnTheDialedAddress(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	port := h.Port
	for _, authority := range []string{
		fmt.Sprintf("jp.example@kr.example:%d", port), // userinfo that looks like a host
		fmt.Sprintf("user:pw@kr.example:%d", port),
		fmt.Sprintf("kr.example:0%d", port), // leading zero in the port
		fmt.Sprintf("2130706945:%d", port),  // 127.0.2.1 as one decimal number
		fmt.Sprintf("0x7f.0.2.1:%d", port),  // hex part
		fmt.Sprintf("0177.0.2.1:%d", port),  // octal part
		fmt.Sprintf("[::ffff:7f00:201]:%d", port),
		fmt.Sprintf("kr%%2eexample:%d", port), // percent-encoded dot
		fmt.Sprintf("KR.EXAMPLE.:%d", port),
	} {
		t.Run(authority, func(t *testing.T) {
			c := h.Raw(t)
			m := marker(t)
			fmt.Fprintf(c, "POST http://%s/u HTTP/1.1\r\nHost: jp.example\r\nContent-Length: %d\r\n\r\n%s", authority, len(m), m)
			resp, text := readResponse(t, bufio.NewReader(c))
			if resp.StatusCode != 403 && resp.StatusCode != 400 {
				t.Fatalf("status %d: %.200s", resp.StatusCode, text)
			}
			assertNoMarker(t, h.KR, m)
			assertNoMarker(t, h.JP, m)
		})
	}
	assertUntouched(t, h.KR)
}

// The tunnel budget: bytes sent with the CONNECT, exactly the budget, one
// byte more.
func TestHolds_TunnelBudgetArithmetic(t *testing.T) {
	t.Run("prefix beyond the budget in the CONNECT packet", func(t *testing.T) {
		h := proxytest.New(t, proxytest.Options{Rules: budgetRules})
		c := h.Raw(t)
		// One write: the HTTP parser reads the tunnel bytes with the head.
		fmt.Fprintf(c, "CONNECT kr.example:%d HTTP/1.1\r\nHost: kr.example\r\n\r\n%s", h.SinkPort, strings.Repeat("p", 3000))
		expectClosed(t, c)
		time.Sleep(50 * time.Millisecond)
		if got := len(h.SinkKR.Received()); got > 1000 {
			t.Errorf("sink received %d bytes, budget 1000", got)
		}
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"budget_exceeded":true`) })
	})
	t.Run("exactly the budget, then the client finishes", func(t *testing.T) {
		h := proxytest.New(t, proxytest.Options{Rules: budgetRules})
		c, _, resp := connect(t, h, fmt.Sprintf("kr.example:%d", h.SinkPort))
		if resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
		_, _ = c.Write(bytes.Repeat([]byte("e"), 1000))
		_ = c.(*net.TCPConn).CloseWrite()
		waitFor(t, func() bool { return len(h.SinkKR.Received()) == 1000 })
		_ = c.Close()
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"kind":"tunnel"`) })
		if strings.Contains(h.Audit(), `"budget_exceeded":true`) {
			t.Error("a tunnel that sent exactly its budget is not over it")
		}
	})
	t.Run("one byte over", func(t *testing.T) {
		h := proxytest.New(t, proxytest.Options{Rules: budgetRules})
		c, _, resp := connect(t, h, fmt.Sprintf("kr.example:%d", h.SinkPort))
		if resp.StatusCode != 200 {
			t.Fatal(resp.Status)
		}
		_, _ = c.Write(bytes.Repeat([]byte("o"), 1001))
		expectClosed(t, c)
		time.Sleep(50 * time.Millisecond)
		if got := len(h.SinkKR.Received()); got != 1000 {
			t.Errorf("sink received %d bytes, want exactly the 1000 of the budget", got)
		}
	})
}

// Bytes a client sends in the same packet as its WebSocket upgrade are
// replayed by goproxy through streamBody.Write and count against the budget.
func TestHolds_WebSocketPipelinedBytesCountAgainstBudget(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: budgetRules})
	c := h.Raw(t)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: kr.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n%s",
		h.URL("kr.example", "/ws"), strings.Repeat("w", 3000))
	expectClosed(t, c)
	time.Sleep(50 * time.Millisecond)
	if got := len(afterHead(h.KR.Received())); got > 1000 {
		t.Errorf("upstream received %d WebSocket bytes; budget 1000", got)
	}
}

// Origin-form requests are never forwarded, whatever their Host header says.
func TestHolds_OriginFormIsNotProxied(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	c := h.Raw(t)
	m := marker(t)
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: kr.example:%d\r\nContent-Length: %d\r\n\r\n%s", h.Port, len(m), m)
	resp, _ := readResponse(t, bufio.NewReader(c))
	if resp.StatusCode != http.StatusMethodNotAllowed { // sekisho's own pages take GET and HEAD only
		t.Fatalf("status %d", resp.StatusCode)
	}
	assertUntouched(t, h.KR)
}

// Bodies on methods that usually have none, and HTTP/1.0, are uploads too.
func TestHolds_OddUploadsAbroadBlocked(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	for _, tc := range []struct{ name, head string }{
		{"GET with a body", "GET %s HTTP/1.1\r\nHost: kr.example\r\nContent-Length: %d\r\n\r\n"},
		{"HEAD with a body", "HEAD %s HTTP/1.1\r\nHost: kr.example\r\nContent-Length: %d\r\n\r\n"},
		{"OPTIONS with a body", "OPTIONS %s HTTP/1.1\r\nHost: kr.example\r\nContent-Length: %d\r\n\r\n"},
		{"HTTP/1.0 POST", "POST %s HTTP/1.0\r\nContent-Length: %d\r\n\r\n"},
		{"Expect on HTTP/1.0", "POST %s HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"},
		{"custom method", "FROB %s HTTP/1.1\r\nHost: kr.example\r\nContent-Length: %d\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.Raw(t)
			m := marker(t)
			fmt.Fprintf(c, tc.head+"%s", h.URL("kr.example", "/u"), len(m), m)
			resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: strings.Fields(tc.head)[0]})
			if err != nil || resp.StatusCode != 403 {
				t.Fatalf("want 403: %v %v", resp, err)
			}
			assertNoMarker(t, h.KR, m)
		})
	}
	assertUntouched(t, h.KR)
}

// Expect: 100-continue when a rule must see the body: the 100 is sent (the
// body must be read to decide), the body is held, and the 403 follows with
// nothing sent upstream.
func TestHolds_ExpectContinueWithHeldBodyBlocked(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: imageRules})
	m := marker(t)
	body, ct := multipartFile(t, "photo.jpg", "image/jpeg", []byte(m))
	c := h.Raw(t)
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: jp.example\r\nContent-Type: %s\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		h.URL("jp.example", "/form"), ct, len(body))
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 100") {
		t.Fatalf("want 100 Continue, got %q", line)
	}
	_, _ = br.ReadString('\n')
	_, _ = c.Write(body)
	resp, _ := readResponse(t, br)
	if resp.StatusCode != 403 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	assertUntouched(t, h.JP)
}

// A kept-alive client connection and pooled upstream connections: the
// transport's pool is keyed by the pinned address, so a connection opened
// for a download from Korea never carries a later request, and a blocked
// request on the same client connection reaches nothing.
func TestHolds_PooledConnectionsFollowThePinnedAddress(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(h.ProxyURL)}} // keep-alive on
	m1, m2 := marker(t), marker(t)
	for i := 0; i < 3; i++ {
		resp, _ := do(t, c, newReq(t, "GET", h.URL("kr.example", "/read"), nil, ""))
		if resp.StatusCode != 200 {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	}
	resp, _ := do(t, c, newReq(t, "POST", h.URL("mixed.example", "/u"), []byte(m1), "text/plain"))
	if resp.StatusCode != 200 {
		t.Fatalf("POST mixed: %d", resp.StatusCode)
	}
	resp, _ = do(t, c, newReq(t, "POST", h.URL("kr.example", "/u"), []byte(m2), "text/plain"))
	if resp.StatusCode != 403 {
		t.Fatalf("POST kr: %d", resp.StatusCode)
	}
	assertNoMarker(t, h.KR, m1)
	assertNoMarker(t, h.KR, m2)
	assertBody(t, h.JP, []byte(m1))
	if n := h.KR.Conns(); n != 1 {
		t.Errorf("KR upstream got %d connections for 3 GETs; want 1 pooled", n)
	}
}

// The held-body buffer is pooled. Many concurrent held bodies (each one
// sent after the decision, byte-exact) show no reuse while the transport
// still reads: run with -race.
func TestHolds_HeldBodyBuffersAreNotSharedWhileInUse(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: imageRules, Limits: proxy.Limits{HoldBodyBytes: 16 << 10}})
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			content := bytes.Repeat([]byte(fmt.Sprintf("%02d", i)), 1000+i*37)
			body, ct := multipartFile(t, "notes.txt", "text/plain", content)
			req, _ := http.NewRequest("POST", h.URL("jp.example", "/form"), io.NopCloser(onlyReader{bytes.NewReader(body)}))
			req.Header.Set("Content-Type", ct)
			req.ContentLength = -1
			resp, err := h.Client().Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			sum := sha256.Sum256(body)
			if resp.StatusCode != 200 || !strings.Contains(string(got), fmt.Sprintf("%d %x", len(body), sum)) {
				errs <- fmt.Sprintf("request %d: %d %.100q", i, resp.StatusCode, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Metric labels stay bounded whatever the hosts: host names never become
// label values.
func TestHolds_LabelsDoNotGrowWithHosts(t *testing.T) {
	res := proxytest.DefaultResolver()
	for i := 0; i < 50; i++ {
		res[fmt.Sprintf("h%d.example", i)] = []netip.Addr{proxytest.AddrKR}
	}
	h := proxytest.New(t, proxytest.Options{Resolver: res})
	c := h.Client()
	for i := 0; i < 50; i++ {
		do(t, c, newReq(t, "GET", h.URL(fmt.Sprintf("h%d.example", i), "/"), nil, ""))
		do(t, c, newReq(t, "POST", h.URL(fmt.Sprintf("h%d.example", i), "/"), []byte("x"), "text/plain"))
		do(t, c, newReq(t, "GET", h.URL(fmt.Sprintf("nx%d.example", i), "/"), nil, ""))
	}
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			series++
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "example") {
					t.Errorf("%s has a host in label %s=%q", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
	if series > 200 {
		t.Errorf("%d series after 150 requests to 100 hosts", series)
	}
}

// A client outside the allowed networks gets nothing: not a tunnel, not a
// WebSocket, not the proxy's own page.
func TestHolds_DisallowedClientGetsNoService(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{AllowedClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	for _, head := range []string{
		fmt.Sprintf("CONNECT jp.example:%d HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.SinkPort),
		fmt.Sprintf("GET %s HTTP/1.1\r\nHost: jp.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", h.URL("jp.example", "/ws")),
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		c := h.Raw(t)
		_, _ = io.WriteString(c, head)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 403 {
			t.Errorf("%q: want 403, got %v %v", strings.SplitN(head, "\r", 2)[0], resp, err)
		}
	}
	assertUntouched(t, h.JP)
	if h.SinkJP.Conns() != 0 {
		t.Error("tunnel sink was dialed")
	}
}

// CONNECT authorities in odd spellings are decided, and budgeted, on the
// address actually dialed.
func TestHolds_ConnectOddAuthorities(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: budgetRules})
	p := h.SinkPort
	for _, line := range []string{
		fmt.Sprintf("CONNECT 2130706945:%d HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", p, p),
		fmt.Sprintf("CONNECT [::ffff:127.0.2.1]:%d HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", p, p),
		fmt.Sprintf("CONNECT user@kr.example:%d HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", p, p),
		fmt.Sprintf("CONNECT /x HTTP/1.1\r\nHost: kr.example:%d\r\n\r\n", p),
		fmt.Sprintf("CONNECT KR.Example.:%d HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", p, p),
		fmt.Sprintf("CONNECT kr.example:%d:443 HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", p, p),
		fmt.Sprintf("CONNECT jp.example HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", p),
	} {
		t.Run(strings.SplitN(line, "\r", 2)[0], func(t *testing.T) {
			before := len(h.SinkKR.Received())
			c := h.Raw(t)
			_, _ = io.WriteString(c, line)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode == 200 {
				_, _ = c.Write(bytes.Repeat([]byte("c"), 5000))
				expectClosed(t, c)
				time.Sleep(50 * time.Millisecond)
				if got := len(h.SinkKR.Received()) - before; got > 1000 {
					t.Errorf("KR sink received %d bytes; budget 1000", got)
				}
			} else if resp.StatusCode != 400 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	if h.SinkJP.Conns() != 0 {
		t.Error("the JP sink (named only by Host headers) was dialed")
	}
}
