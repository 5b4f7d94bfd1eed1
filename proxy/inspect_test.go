package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

// inspectAll opens every CONNECT (but one site, tunnelled) and keeps the
// default upload rule.
const inspectAll = `
version: 1
inspection:
  default: true
  rules:
    - name: leave-us-alone
      domains: [us.example]
      inspect: false
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
    message: 国外への送信は禁止されています。
    alternative: 庁内ファイル共有 https://files.city.example.lg.jp/
`

func interceptHarness(t *testing.T) *proxytest.Harness {
	t.Helper()
	return proxytest.New(t, proxytest.Options{Intercept: true, Rules: inspectAll})
}

func TestInspectedForeignUploadBlocked(t *testing.T) {
	h := interceptHarness(t)
	m := marker(t)
	body, ct := multipartFile(t, "photo.jpg", "image/jpeg", []byte(m+strings.Repeat("\xff", 40000)))
	resp, text := do(t, h.TLSClient(), newReq(t, "POST", h.TLSURL("kr.example", "/upload"), body, ct))
	assertBlockPage(t, resp, text)
	for _, want := range []string{"庁内ファイル共有", "国外への送信は禁止されています"} {
		if !strings.Contains(text, want) {
			t.Errorf("block page lacks %q", want)
		}
	}
	if resp.TLS == nil || resp.TLS.PeerCertificates[0].Issuer.CommonName != h.CA.Cert.Subject.CommonName {
		t.Fatal("the block page must come inside TLS, under sekisho's CA")
	}
	assertUntouched(t, h.KR)
	waitFor(t, func() bool {
		return strings.Contains(h.Audit(), `"mode":"inspected"`) && strings.Contains(h.Audit(), `"action":"block"`)
	})
	if !strings.Contains(h.Audit(), `"inspection":"default"`) {
		t.Errorf("the CONNECT line must say why the tunnel was opened:\n%s", h.Audit())
	}
}

func TestInspectedDomesticUploadAllowed(t *testing.T) {
	h := interceptHarness(t)
	body := []byte(marker(t) + strings.Repeat("d", 300000))
	resp, text := do(t, h.TLSClient(), newReq(t, "POST", h.TLSURL("jp.example", "/upload"), body, "application/octet-stream"))
	if resp.StatusCode != 200 || !strings.HasPrefix(text, "JP POST /upload 300045") {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	assertBody(t, h.JP, body)
	if r := h.JP.Requests(); r[len(r)-1].TLS == nil {
		t.Error("the upstream request must be TLS")
	}
}

func TestInspectedDownloadAbroadAllowed(t *testing.T) {
	h := interceptHarness(t)
	resp, text := do(t, h.TLSClient(), newReq(t, "GET", h.TLSURL("cn.example", "/big?n=500000"), nil, ""))
	if resp.StatusCode != 200 || len(text) != 500000 {
		t.Fatalf("%d, %d bytes", resp.StatusCode, len(text))
	}
}

// tlsThroughProxy opens a CONNECT to target and a TLS session inside it
// with the given SNI, trusting sekisho's CA.
func tlsThroughProxy(t *testing.T, h *proxytest.Harness, target, sni string) (*tls.Conn, error) {
	t.Helper()
	c, br, resp := connect(t, h, target)
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %s: %d", target, resp.StatusCode)
	}
	if br.Buffered() > 0 {
		t.Fatal("bytes after the CONNECT answer")
	}
	pool := x509.NewCertPool()
	pool.AddCert(h.CA.Cert)
	tc := tls.Client(c, &tls.Config{ServerName: sni, RootCAs: pool})
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	return tc, tc.Handshake()
}

func TestDomainFronting(t *testing.T) {
	h := interceptHarness(t)
	target := fmt.Sprintf("jp.example:%d", h.TLSPort)
	t.Run("SNI for another host", func(t *testing.T) {
		_, err := tlsThroughProxy(t, h, target, "kr.example")
		if err == nil {
			t.Fatal("a TLS handshake whose SNI names another host than the CONNECT must fail")
		}
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"reason":"domain_fronting"`) })
	})
	t.Run("Host header for another host", func(t *testing.T) {
		tc, err := tlsThroughProxy(t, h, target, "jp.example")
		if err != nil {
			t.Fatal(err)
		}
		m := marker(t)
		fmt.Fprintf(tc, "POST /upload HTTP/1.1\r\nHost: kr.example:%d\r\nContent-Length: %d\r\n\r\n%s", h.TLSPort, len(m), m)
		resp, text := readResponse(t, bufio.NewReader(tc))
		if resp.StatusCode != 403 || !strings.Contains(text, "ドメインフロンティング") {
			t.Fatalf("status %d: %.300s", resp.StatusCode, text)
		}
	})
	t.Run("absolute-form target for another host", func(t *testing.T) {
		tc, err := tlsThroughProxy(t, h, target, "jp.example")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(tc, "GET https://kr.example:%d/ HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.TLSPort)
		resp, _ := readResponse(t, bufio.NewReader(tc))
		if resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	assertUntouched(t, h.KR)
}

func TestBypassedHostIsTunnelled(t *testing.T) {
	h := interceptHarness(t)
	// Not intercepted: the client sees the site's own certificate, so it
	// must trust the test upstream CA itself.
	client := h.TLSClient()
	client.Transport.(*http.Transport).TLSClientConfig.RootCAs = proxytest.TestUpstreamCA().Pool
	resp, text := do(t, client, newReq(t, "GET", h.TLSURL("us.example", "/"), nil, ""))
	if resp.StatusCode != 200 || !strings.HasPrefix(text, "US GET") {
		t.Fatalf("%d %q", resp.StatusCode, text)
	}
	if resp.TLS.PeerCertificates[0].Issuer.CommonName != proxytest.TestUpstreamCA().Cert.Subject.CommonName {
		t.Fatal("a bypassed host must not be intercepted")
	}
	// Its upload budget still applies.
	big := bytes.Repeat([]byte("b"), 3<<20)
	before := len(h.US.Received())
	r, err := client.Post(h.TLSURL("us.example", "/upload"), "application/octet-stream", bytes.NewReader(big))
	if err == nil {
		r.Body.Close()
		if r.StatusCode == 200 {
			t.Fatal("3 MiB went through a foreign tunnel with a 1 MiB budget")
		}
	}
	if got := len(h.US.Received()) - before; got > 1<<20 {
		t.Fatalf("foreign server received %d bytes through the bypassed tunnel", got)
	}
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"inspection":"leave-us-alone"`) })
}

func TestUpstreamCertificateVerified(t *testing.T) {
	h := interceptHarness(t)
	resp, text := do(t, h.TLSClient(), newReq(t, "GET", h.TLSURL("wrongname.example", "/"), nil, ""))
	if resp.StatusCode != 502 || !strings.Contains(text, "送信先の証明書を検証できませんでした") || !strings.Contains(text, "x509") {
		t.Fatalf("status %d: %.500s", resp.StatusCode, text)
	}
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"reason":"upstream_tls"`) })
}

func TestLeafCertificate(t *testing.T) {
	h := interceptHarness(t)
	for _, tc := range []struct{ target, sni string }{
		{fmt.Sprintf("jp.example:%d", h.TLSPort), "jp.example"},
		{fmt.Sprintf("127.0.1.1:%d", h.TLSPort), ""},
	} {
		t.Run(tc.target, func(t *testing.T) {
			c, _, resp := connect(t, h, tc.target)
			if resp.StatusCode != 200 {
				t.Fatalf("CONNECT %d", resp.StatusCode)
			}
			conn := tls.Client(c, &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true})
			if err := conn.Handshake(); err != nil {
				t.Fatal(err)
			}
			chain := conn.ConnectionState().PeerCertificates
			if len(chain) != 2 || !chain[1].Equal(h.CA.Cert) {
				t.Fatalf("the server must send the leaf and sekisho's CA (%d certificates)", len(chain))
			}
			leaf := chain[0]
			name := tc.sni
			if name == "" {
				name = "127.0.1.1"
				if len(leaf.IPAddresses) != 1 || leaf.IPAddresses[0].String() != name || len(leaf.DNSNames) != 0 {
					t.Errorf("IP leaf SANs: %v %v", leaf.IPAddresses, leaf.DNSNames)
				}
			} else if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != name {
				t.Errorf("DNS SANs %v", leaf.DNSNames)
			}
			pool := x509.NewCertPool()
			pool.AddCert(h.CA.Cert)
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool}); err != nil {
				t.Errorf("leaf does not verify for %s: %v", name, err)
			}
			now := time.Now()
			if leaf.NotBefore.After(now.Add(-50*time.Minute)) || leaf.NotAfter.After(now.Add(8*24*time.Hour)) || leaf.NotAfter.Before(now.Add(6*24*time.Hour)) {
				t.Errorf("validity %v – %v: want backdated about an hour, about 7 days", leaf.NotBefore, leaf.NotAfter)
			}
			if leaf.IsCA || leaf.KeyUsage != x509.KeyUsageDigitalSignature || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
				t.Errorf("usage: CA %v, key usage %v, ext %v", leaf.IsCA, leaf.KeyUsage, leaf.ExtKeyUsage)
			}
			if leaf.PublicKeyAlgorithm != x509.ECDSA {
				t.Errorf("key algorithm %v, want ECDSA", leaf.PublicKeyAlgorithm)
			}
		})
	}
}

func TestInspectedKeepAliveUpstream(t *testing.T) {
	h := interceptHarness(t)
	tc, err := tlsThroughProxy(t, h, fmt.Sprintf("jp.example:%d", h.TLSPort), "jp.example")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(tc)
	for i := 0; i < 10; i++ {
		fmt.Fprintf(tc, "GET /n%d HTTP/1.1\r\nHost: jp.example:%d\r\n\r\n", i, h.TLSPort)
		resp, text := readResponse(t, br)
		if resp.StatusCode != 200 || !strings.HasPrefix(text, fmt.Sprintf("JP GET /n%d", i)) {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, text)
		}
	}
	if n := h.JP.Conns(); n != 1 {
		t.Errorf("10 requests made %d upstream connections; want 1 (keep-alive, one TLS handshake)", n)
	}
}

func TestInspectedWebSocket(t *testing.T) {
	h := interceptHarness(t)
	open := func(host string) (*tls.Conn, *bufio.Reader) {
		tc, err := tlsThroughProxy(t, h, fmt.Sprintf("%s:%d", host, h.TLSPort), host)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(tc, "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", host, h.TLSPort)
		br := bufio.NewReader(tc)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "hello from") {
			t.Fatalf("greeting %q %v", line, err)
		}
		return tc, br
	}
	t.Run("foreign: small messages pass", func(t *testing.T) {
		tc, _ := open("kr.example")
		for i := 0; i < 10; i++ {
			if _, err := tc.Write(bytes.Repeat([]byte("m"), 1000)); err != nil {
				t.Fatal(err)
			}
		}
		_ = tc.Close()
	})
	t.Run("foreign: a large message is stopped", func(t *testing.T) {
		tc, br := open("kr.example")
		chunk := bytes.Repeat([]byte("L"), 64<<10)
		for sent := 0; sent < 3<<20; sent += len(chunk) {
			if _, err := tc.Write(chunk); err != nil {
				break
			}
		}
		_ = tc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, br); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the WebSocket was not closed at the budget")
			}
		}
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"budget_exceeded":true`) })
	})
}

func TestBlockedConnectShowsThePageInside(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true, Rules: `
version: 1
inspection:
  default: true
rules:
  - name: no-china
    countries: [CN]
    action: block
    message: 中国のサーバーは利用できません。
`})
	resp, text := do(t, h.TLSClient(), newReq(t, "GET", h.TLSURL("cn.example", "/"), nil, ""))
	if resp.StatusCode != 403 || !strings.Contains(text, "no-china") {
		t.Fatalf("status %d: %.300s", resp.StatusCode, text)
	}
	assertUntouched(t, h.CN)
}

func TestInterceptionMetrics(t *testing.T) {
	h := interceptHarness(t)
	do(t, h.TLSClient(), newReq(t, "GET", h.TLSURL("jp.example", "/"), nil, ""))
	do(t, h.TLSClient(), newReq(t, "GET", h.TLSURL("jp.example", "/again"), nil, ""))
	do(t, h.TLSClient(), newReq(t, "POST", h.TLSURL("kr.example", "/"), []byte("x"), "text/plain"))
	waitFor(t, func() bool {
		return metricSum(t, h, "sekisho_proxy_requests_total", "mode", "inspected") == 3
	})
	if got := metricSum(t, h, "sekisho_proxy_blocked_total", "country", "KR"); got != 1 {
		t.Errorf("blocked = %v", got)
	}
	if got := metricSum(t, h, "sekisho_tls_certificates_issued_total"); got != 2 {
		t.Errorf("certificates issued = %v, want 2 (jp.example, kr.example)", got)
	}
	if got := metricSum(t, h, "sekisho_tls_certificate_cache_hits_total"); got != 1 {
		t.Errorf("cache hits = %v, want 1", got)
	}
}

// TestInspectedConnectIdleClosed: a client that is answered 200 to its
// CONNECT and then sends nothing (no TLS handshake) is closed after
// ReadHeaderTimeout, not held (with its connection slot) for ever:
// goproxy's hijack clears the deadlines set before it.
func TestInspectedConnectIdleClosed(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true, Rules: inspectAll, Limits: proxy.Limits{
		ReadHeaderTimeout: 300 * time.Millisecond,
	}})
	c := h.Raw(t)
	fmt.Fprintf(c, "CONNECT jp.example:443 HTTP/1.1\r\nHost: jp.example:443\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %v %v", resp, err)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, br)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("an intercepted tunnel without a TLS handshake is still open after 5s (ReadHeaderTimeout 300ms)")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v, want about ReadHeaderTimeout", d)
	}
}

// TestInspectedBlockedUploadNotReadOn: after the 403 to a blocked upload
// inside an intercepted tunnel, sekisho reads no more of the body (the
// answer closes the connection), so a 64 MiB upload is not taken in
// whole; the client can still read the answer; and the foreign upstream
// gets nothing.
func TestInspectedBlockedUploadNotReadOn(t *testing.T) {
	h := interceptHarness(t)
	target := net.JoinHostPort("kr.example", strconv.Itoa(h.TLSPort))
	tc, err := tlsThroughProxy(t, h, target, "kr.example")
	if err != nil {
		t.Fatal(err)
	}
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	const total = 64 << 20
	fmt.Fprintf(tc, "POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", target, total)
	var sent atomic.Int64
	done := make(chan error, 1)
	go func() {
		// About 8 MB/s, as from a PC on the LAN: the whole body would
		// take 8 s.
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for sent.Load() < total {
			n, err := tc.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				done <- err
				return
			}
			time.Sleep(8 * time.Millisecond)
		}
		done <- nil
	}()
	// A browser busy sending reads the answer a little later: it must
	// still be there (closing at once, with the body unread, would reset
	// the connection and make the browser drop it: ERR_CONNECTION_RESET).
	time.Sleep(200 * time.Millisecond)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if resp.StatusCode != http.StatusForbidden || !resp.Close {
		t.Fatalf("answer %d (close %v), want 403 closing the connection", resp.StatusCode, resp.Close)
	}
	at403 := sent.Load()
	select {
	case err := <-done:
		if err == nil {
			t.Error("the whole 64 MiB body was taken in after the 403")
		}
	case <-time.After(3 * time.Second):
		t.Error("still sending 3s after the 403: sekisho keeps reading")
	}
	// Half a second more of reading, and socket buffers.
	if more := sent.Load() - at403; more > 24<<20 {
		t.Errorf("%d MiB more of the body were taken in after the 403", more>>20)
	}
	assertUntouched(t, h.KR)
}

// TestShutdownWithOpenInspectedSession: an intercepted session still open
// at the drain deadline is closed and Shutdown returns. (Closing it runs
// its untrack, which takes the lock Shutdown held around the closing: a
// deadlock until SIGKILL.)
func TestShutdownWithOpenInspectedSession(t *testing.T) {
	h := interceptHarness(t)
	for range 5 { // the deadlock depended on timing: several sessions make it likely
		tc, err := tlsThroughProxy(t, h, fmt.Sprintf("jp.example:%d", h.TLSPort), "jp.example")
		if err != nil {
			t.Fatal(err)
		}
		_ = tc.SetDeadline(time.Time{})
	}
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_ = h.Proxy.Shutdown(ctx)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(6 * time.Second):
		t.Fatal("Shutdown (300ms deadline) has not returned after 6s with one intercepted session open")
	}
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"method":"CONNECT"`) })
}

// TestInspectedBlockedUploadClosesCleanly: a browser sends a small upload
// whole before it reads the 403: the connection then ends with the TLS
// close and a FIN, not with a reset (which Chromium shows as
// ERR_CONNECTION_RESET instead of the block page).
func TestInspectedBlockedUploadClosesCleanly(t *testing.T) {
	h := interceptHarness(t)
	target := net.JoinHostPort("kr.example", strconv.Itoa(h.TLSPort))
	tc, err := tlsThroughProxy(t, h, target, "kr.example")
	if err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte("r"), 96<<10)
	fmt.Fprintf(tc, "POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", target, len(body))
	if _, err := tc.Write(body); err != nil {
		t.Fatalf("sending the body: %v", err)
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("reading the block page: %v", err)
	}
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403", resp.StatusCode)
	}
	if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after the answer: %d bytes, %v; want a clean end of stream", n, err)
	}
	assertUntouched(t, h.KR)
}
