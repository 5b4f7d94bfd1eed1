package proxy_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy"
	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

// marker returns a unique string to put in a body, so that a test can say
// "not one byte of this body reached that server".
func marker(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "SEKISHO-BODY-" + hex.EncodeToString(b)
}

// multipartFile builds a multipart/form-data body with one text field and
// one file part.
func multipartFile(t *testing.T, filename, partType string, content []byte) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("comment", "residents' consultation")
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, filename))
	h.Set("Content-Type", partType)
	w, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(content)
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

// assertUntouched fails unless the upstream received nothing at all: the
// proxy decided before dialing.
func assertUntouched(t *testing.T, u *proxytest.Upstream) {
	t.Helper()
	// Give a (wrong) in-flight connection a moment to show up.
	time.Sleep(20 * time.Millisecond)
	if n := u.Conns(); n != 0 {
		t.Errorf("%s upstream got %d connection(s); a blocked request must not be dialed", u.Name, n)
	}
	if got := u.Received(); len(got) != 0 {
		t.Errorf("%s upstream received %d bytes; want 0:\n%.300q", u.Name, len(got), got)
	}
}

func assertNoMarker(t *testing.T, u *proxytest.Upstream, m string) {
	t.Helper()
	time.Sleep(20 * time.Millisecond)
	if bytes.Contains(u.Received(), []byte(m)) {
		t.Errorf("%s upstream received body bytes (%s)", u.Name, m)
	}
}

func assertBody(t *testing.T, u *proxytest.Upstream, want []byte) {
	t.Helper()
	bodies := u.Bodies()
	if len(bodies) == 0 {
		t.Fatalf("%s upstream received no request", u.Name)
	}
	if got := bodies[len(bodies)-1]; !bytes.Equal(got, want) {
		t.Errorf("%s upstream received a body of %d bytes; want the %d bytes sent, byte-exact", u.Name, len(got), len(want))
	}
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func newReq(t *testing.T, method, url string, body []byte, contentType string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

func assertBlockPage(t *testing.T, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("status %d, want 403; body:\n%.500s", resp.StatusCode, body)
	}
	for _, want := range []string{"この送信はブロックされました", "This upload was blocked", "block-foreign-uploads"} {
		if !strings.Contains(body, want) {
			t.Errorf("block page lacks %q", want)
		}
	}
	id := resp.Header.Get("X-Sekisho-Request-Id")
	if id == "" || !strings.Contains(body, id) {
		t.Errorf("block page must show the request id %q", id)
	}
}

func TestDomesticPostAllowed(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	body := []byte(marker(t) + strings.Repeat("x", 100000))
	resp, text := do(t, h.Client(), newReq(t, "POST", h.URL("jp.example", "/upload"), body, "application/octet-stream"))
	if resp.StatusCode != 200 || !strings.HasPrefix(text, "JP POST /upload 100045") {
		t.Fatalf("got %d %q", resp.StatusCode, text)
	}
	assertBody(t, h.JP, body)
}

func TestForeignMultipartUploadBlocked(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	m := marker(t)
	body, ct := multipartFile(t, "photo.jpg", "image/jpeg", []byte(m+strings.Repeat("\xff", 50000)))
	resp, text := do(t, h.Client(), newReq(t, "POST", h.URL("kr.example", "/upload"), body, ct))
	assertBlockPage(t, resp, text)
	for _, want := range []string{"kr.example", "KR 韓国 / South Korea", "情報政策課"} {
		if !strings.Contains(text, want) {
			t.Errorf("block page lacks %q", want)
		}
	}
	assertUntouched(t, h.KR)
}

func TestBlockPageJSON(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	req := newReq(t, "POST", h.URL("kr.example", "/api"), []byte(`{"x":1}`), "application/json")
	req.Header.Set("Accept", "application/json")
	resp, text := do(t, h.Client(), req)
	if resp.StatusCode != 403 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		t.Fatal(err)
	}
	if v["error"] != "upload_blocked" || v["country"] != "KR" || v["rule"] != "block-foreign-uploads" || v["request_id"] != resp.Header.Get("X-Sekisho-Request-Id") {
		t.Errorf("JSON block answer: %v", v)
	}
	assertUntouched(t, h.KR)
}

func TestForeignGetAllowed(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	for _, site := range []string{"kr.example", "cn.example", "us.example", "unknown.example"} {
		resp, text := do(t, h.Client(), newReq(t, "GET", h.URL(site, "/big?n=300000"), nil, ""))
		if resp.StatusCode != 200 || len(text) != 300000 {
			t.Errorf("GET %s: %d, %d bytes", site, resp.StatusCode, len(text))
		}
	}
}

func TestMethodsWithBodies(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	for _, method := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		t.Run(method+"/domestic", func(t *testing.T) {
			body := []byte(marker(t))
			resp, _ := do(t, h.Client(), newReq(t, method, h.URL("jp.example", "/f"), body, "text/plain"))
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			assertBody(t, h.JP, body)
		})
		t.Run(method+"/foreign", func(t *testing.T) {
			body := []byte(marker(t))
			resp, text := do(t, h.Client(), newReq(t, method, h.URL("us.example", "/f"), body, "text/plain"))
			assertBlockPage(t, resp, text)
			assertUntouched(t, h.US)
		})
	}
}

// onlyReader hides bytes.Reader's length so that net/http sends the body
// chunked.
type onlyReader struct{ io.Reader }

func TestChunkedBody(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	t.Run("domestic", func(t *testing.T) {
		body := []byte(marker(t) + strings.Repeat("c", 200000))
		req := newReq(t, "POST", h.URL("jp.example", "/chunked"), nil, "application/octet-stream")
		req.Body = io.NopCloser(onlyReader{bytes.NewReader(body)})
		req.ContentLength = -1
		resp, _ := do(t, h.Client(), req)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if got := h.JP.Requests(); len(got[len(got)-1].TransferEncoding) == 0 && got[len(got)-1].ContentLength < 0 {
			t.Log("upstream request framing:", got[len(got)-1].TransferEncoding)
		}
		assertBody(t, h.JP, body)
	})
	t.Run("foreign", func(t *testing.T) {
		m := marker(t)
		req := newReq(t, "POST", h.URL("kr.example", "/chunked"), nil, "application/octet-stream")
		req.Body = io.NopCloser(onlyReader{strings.NewReader(m + strings.Repeat("c", 200000))})
		req.ContentLength = -1
		resp, text := do(t, h.Client(), req)
		assertBlockPage(t, resp, text)
		assertUntouched(t, h.KR)
	})
}

// readResponse reads one response from a raw connection.
func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestExpectContinue(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	t.Run("foreign: 403 instead of 100, body never read", func(t *testing.T) {
		c := h.Raw(t)
		m := marker(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: kr.example\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
			h.URL("kr.example", "/upload"), len(m))
		br := bufio.NewReader(c)
		resp, text := readResponse(t, br)
		if resp.StatusCode != 403 {
			t.Fatalf("first answer %d (want 403, and no 100 Continue)", resp.StatusCode)
		}
		if !strings.Contains(text, "block-foreign-uploads") {
			t.Errorf("not the block page: %.200s", text)
		}
		// The client may still send; the proxy has closed the connection.
		_, _ = c.Write([]byte(m))
		assertUntouched(t, h.KR)
	})
	t.Run("domestic: 100 then the body goes through", func(t *testing.T) {
		c := h.Raw(t)
		m := marker(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: jp.example\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
			h.URL("jp.example", "/upload"), len(m))
		br := bufio.NewReader(c)
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("want 100 Continue first, got %q %v", line, err)
		}
		_, _ = br.ReadString('\n') // blank line after the 100
		_, _ = c.Write([]byte(m))
		resp, _ := readResponse(t, br)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		assertBody(t, h.JP, []byte(m))
	})
}

func TestGzipEncodedBody(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	m := marker(t)
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	_, _ = zw.Write([]byte(m + strings.Repeat("z", 10000)))
	_ = zw.Close()
	for _, tc := range []struct {
		site string
		up   *proxytest.Upstream
		want int
	}{{"kr.example", h.KR, 403}, {"jp.example", h.JP, 200}} {
		req := newReq(t, "POST", h.URL(tc.site, "/gz"), zb.Bytes(), "text/plain")
		req.Header.Set("Content-Encoding", "gzip")
		resp, _ := do(t, h.Client(), req)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.site, resp.StatusCode, tc.want)
		}
		if tc.want == 403 {
			assertUntouched(t, tc.up)
		} else {
			assertBody(t, tc.up, zb.Bytes())
			if got := tc.up.Requests()[0].Header.Get("Content-Encoding"); got != "gzip" {
				t.Errorf("Content-Encoding upstream %q, want gzip passed through", got)
			}
		}
	}
}

func TestContentLengthWithTransferEncodingRefused(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	for _, site := range []string{"jp.example", "kr.example"} {
		c := h.Raw(t)
		m := marker(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n",
			h.URL(site, "/smuggle"), site, len(m), m)
		resp, text := readResponse(t, bufio.NewReader(c))
		if resp.StatusCode != 400 || !strings.Contains(text, "Content-Length") {
			t.Errorf("%s: status %d, want 400 naming the conflict; %.200s", site, resp.StatusCode, text)
		}
		if !resp.Close {
			t.Errorf("%s: connection must close after an ambiguous request", site)
		}
	}
	assertUntouched(t, h.JP)
	assertUntouched(t, h.KR)
}

func TestPipelinedSecondRequestIsForeignUpload(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	m := marker(t)
	c := h.Raw(t)
	// Both requests in one write: the second must be decided on its own.
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: jp.example\r\n\r\n"+
		"POST %s HTTP/1.1\r\nHost: kr.example\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s",
		h.URL("jp.example", "/first"), h.URL("kr.example", "/second"), len(m), m)
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	r1, t1 := readResponse(t, br)
	if r1.StatusCode != 200 || !strings.HasPrefix(t1, "JP GET /first") {
		t.Fatalf("first: %d %q", r1.StatusCode, t1)
	}
	r2, t2 := readResponse(t, br)
	if r2.StatusCode != 403 || !strings.Contains(t2, "block-foreign-uploads") {
		t.Fatalf("second: %d %.200q", r2.StatusCode, t2)
	}
	assertUntouched(t, h.KR)
}

func TestIPLiteralTargets(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	port := strconv.Itoa(h.Port)
	for _, tc := range []struct {
		name string
		url  string
		up   *proxytest.Upstream
		want int
	}{
		{"IPv4 JP", "http://127.0.1.1:" + port + "/", h.JP, 200},
		{"IPv4 KR", "http://127.0.2.1:" + port + "/", h.KR, 403},
		{"IPv6 JP", "http://[::1]:" + port + "/", h.JP6, 200},
		{"IPv4-mapped IPv6 KR", "http://[::ffff:127.0.2.1]:" + port + "/", h.KR, 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := []byte(marker(t))
			resp, text := do(t, h.Client(), newReq(t, "POST", tc.url, m, "text/plain"))
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %.200s", resp.StatusCode, tc.want, text)
			}
			if tc.want == 200 {
				assertBody(t, tc.up, m)
			} else {
				assertUntouched(t, tc.up)
			}
		})
	}
}

func TestHostSpellings(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	for _, tc := range []struct {
		host string
		up   *proxytest.Upstream
		want int
	}{
		{"KR.EXAMPLE", h.KR, 403},
		{"kr.example.", h.KR, 403},
		{"Kr.Example.", h.KR, 403},
		{"JP.EXAMPLE.", h.JP, 200},
	} {
		t.Run(tc.host, func(t *testing.T) {
			c := h.Raw(t)
			m := marker(t)
			fmt.Fprintf(c, "POST http://%s:%d/x HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", tc.host, h.Port, tc.host, len(m), m)
			resp, text := readResponse(t, bufio.NewReader(c))
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, tc.want, text)
			}
			if tc.want == 403 {
				assertUntouched(t, tc.up)
			} else {
				assertBody(t, tc.up, []byte(m))
			}
		})
	}
	t.Run("invalid host is a 400", func(t *testing.T) {
		c := h.Raw(t)
		fmt.Fprintf(c, "GET http://bad_host..example:%d/ HTTP/1.1\r\nHost: x\r\n\r\n", h.Port)
		resp, _ := readResponse(t, bufio.NewReader(c))
		if resp.StatusCode != 400 {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

func TestNameWithDomesticAndForeignAddressDialsDomestic(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	body := []byte(marker(t))
	resp, text := do(t, h.Client(), newReq(t, "POST", h.URL("mixed.example", "/upload"), body, "text/plain"))
	if resp.StatusCode != 200 || !strings.HasPrefix(text, "JP POST") {
		t.Fatalf("status %d %q: the Japanese address must be chosen", resp.StatusCode, text)
	}
	assertBody(t, h.JP, body)
	assertUntouched(t, h.KR)
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"addr":"127.0.1.1:`+strconv.Itoa(h.Port)+`"`) })
}

func TestUnknownCountryUploadBlocked(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	body := []byte(marker(t))
	resp, text := do(t, h.Client(), newReq(t, "POST", h.URL("unknown.example", "/upload"), body, "text/plain"))
	assertBlockPage(t, resp, text)
	if !strings.Contains(text, "不明") {
		t.Errorf("block page should say the country is unknown")
	}
	assertUntouched(t, h.Unknown)
}

func TestUnresolvableName(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	resp, text := do(t, h.Client(), newReq(t, "GET", h.URL("nx.example", "/"), nil, ""))
	if resp.StatusCode != 502 || !strings.Contains(text, "送信先の名前を解決できませんでした") {
		t.Errorf("GET: %d %.200s", resp.StatusCode, text)
	}
	resp, text = do(t, h.Client(), newReq(t, "POST", h.URL("nx.example", "/"), []byte("data"), "text/plain"))
	if resp.StatusCode != 403 {
		t.Errorf("POST to an unresolvable name is an upload to an unknown country: %d %.200s", resp.StatusCode, text)
	}
}

func TestDestinationsRefused(t *testing.T) {
	// The PAC file names the proxy by another name: a request for its
	// listener's address is then not for sekisho's own pages (see
	// TestOnboardPage), and the dialer must refuse it.
	h := proxytest.New(t, proxytest.Options{PAC: pages.PACConfig{Proxies: []string{"proxy1.city.example.lg.jp:3128"}}})
	for _, url := range []string{
		"http://metadata.example/latest/meta-data/",
		"http://169.254.169.254/latest/meta-data/",
		"http://[fe80::1]/",
		"http://0.0.0.0:" + strconv.Itoa(h.Port) + "/",
		"http://" + h.Addr + "/",
	} {
		t.Run(url, func(t *testing.T) {
			resp, text := do(t, h.Client(), newReq(t, "GET", url, nil, ""))
			if resp.StatusCode != 403 || !strings.Contains(text, "この送信先には接続できません") {
				t.Fatalf("status %d: %.300s", resp.StatusCode, text)
			}
		})
	}
	t.Run("CONNECT to the proxy itself", func(t *testing.T) {
		c := h.Raw(t)
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", h.Addr, h.Addr)
		resp, _ := readResponse(t, bufio.NewReader(c))
		if resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestClientOutsideAllowedNetworksRefused(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{AllowedClients: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	resp, text := do(t, h.Client(), newReq(t, "GET", h.URL("jp.example", "/"), nil, ""))
	if resp.StatusCode != 403 || !strings.Contains(text, "このネットワークからは利用できません") {
		t.Fatalf("status %d: %.300s", resp.StatusCode, text)
	}
	assertUntouched(t, h.JP)
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"reason":"client_not_allowed"`) })
	if got := metricSum(t, h, "sekisho_proxy_refused_total", "reason", "client_not_allowed"); got != 1 {
		t.Errorf("sekisho_proxy_refused_total{reason=client_not_allowed} = %v, want 1", got)
	}
}

// connect opens a CONNECT tunnel through the proxy.
func connect(t *testing.T, h *proxytest.Harness, target string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c := h.Raw(t)
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return c, br, resp
}

func TestTunnelUploadBudget(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	const budget = 1 << 20
	send := func(c net.Conn, n int) (sent int) {
		chunk := bytes.Repeat([]byte("u"), 32<<10)
		for sent < n {
			k, err := c.Write(chunk[:min(len(chunk), n-sent)])
			sent += k
			if err != nil {
				return sent
			}
		}
		return sent
	}
	t.Run("foreign tunnel is closed at the budget", func(t *testing.T) {
		c, br, resp := connect(t, h, fmt.Sprintf("kr.example:%d", h.SinkPort))
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT status %d", resp.StatusCode)
		}
		send(c, budget+512<<10)
		// The proxy closes the tunnel: reading ends.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, br)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("tunnel still open after the client exceeded its budget")
		}
		time.Sleep(50 * time.Millisecond)
		if got := len(h.SinkKR.Received()); got > budget {
			t.Errorf("foreign sink received %d bytes; the budget is %d", got, budget)
		}
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"budget_exceeded":true`) })
		if got := metricSum(t, h, "sekisho_proxy_tunnel_budget_exceeded_total", "country", "KR"); got != 1 {
			t.Errorf("sekisho_proxy_tunnel_budget_exceeded_total{country=KR} = %v", got)
		}
	})
	t.Run("domestic tunnel is unlimited", func(t *testing.T) {
		c, _, resp := connect(t, h, fmt.Sprintf("jp.example:%d", h.SinkPort))
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT status %d", resp.StatusCode)
		}
		const n = 3 << 20
		if sent := send(c, n); sent != n {
			t.Fatalf("sent only %d", sent)
		}
		_ = c.(*net.TCPConn).CloseWrite()
		waitFor(t, func() bool { return len(h.SinkJP.Received()) == n })
	})
	t.Run("foreign tunnel within budget works both ways", func(t *testing.T) {
		h.SinkKR.SetGreeting([]byte("hello from KR\n"))
		c, br, resp := connect(t, h, fmt.Sprintf("kr.example:%d", h.SinkPort))
		if resp.StatusCode != 200 {
			t.Fatalf("CONNECT status %d", resp.StatusCode)
		}
		line, err := br.ReadString('\n')
		if err != nil || line != "hello from KR\n" {
			t.Fatalf("greeting %q %v", line, err)
		}
		before := len(h.SinkKR.Received())
		send(c, 1000)
		waitFor(t, func() bool { return len(h.SinkKR.Received()) == before+1000 })
	})
}

func TestConnectBlockedByRule(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: `
version: 1
rules:
  - name: no-china
    countries: [CN]
    action: block
    message: 中国のサーバーへの接続は禁止されています。
`})
	_, _, resp := connect(t, h, fmt.Sprintf("cn.example:%d", h.SinkPort))
	if resp.StatusCode != 403 {
		t.Fatalf("CONNECT to CN: status %d", resp.StatusCode)
	}
	if !resp.Close {
		t.Error("a refused CONNECT must close the connection (the framing check stops at a CONNECT)")
	}
	_, _, resp = connect(t, h, fmt.Sprintf("kr.example:%d", h.SinkPort))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT to KR: status %d", resp.StatusCode)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const imageRules = `
version: 1
rules:
  - name: no-images
    content_types: ["image/*"]
    action: block
    message: 画像の送信は禁止されています。
default: allow
`

func TestHeldBodyDecidesOnFileParts(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: imageRules, Limits: proxy.Limits{HoldBodyBytes: 16 << 10}})
	chunked := func(body []byte, ct, url string) *http.Request {
		req := newReq(t, "POST", url, nil, ct)
		req.Body = io.NopCloser(onlyReader{bytes.NewReader(body)})
		req.ContentLength = -1
		return req
	}
	t.Run("image part seen in the held prefix: blocked, nothing sent", func(t *testing.T) {
		m := marker(t)
		body, ct := multipartFile(t, "photo.jpg", "image/jpeg", []byte(m+strings.Repeat("i", 100<<10)))
		resp, _ := do(t, h.Client(), chunked(body, ct, h.URL("jp.example", "/form")))
		if resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		assertUntouched(t, h.JP)
	})
	t.Run("text file, whole body held: allowed byte-exact", func(t *testing.T) {
		body, ct := multipartFile(t, "notes.txt", "text/plain", []byte(marker(t)))
		resp, _ := do(t, h.Client(), chunked(body, ct, h.URL("jp.example", "/form")))
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		assertBody(t, h.JP, body)
	})
	t.Run("large text file beyond the hold limit: unknown parts fail closed", func(t *testing.T) {
		body, ct := multipartFile(t, "big.txt", "text/plain", bytes.Repeat([]byte("t"), 200<<10))
		resp, _ := do(t, h.Client(), chunked(body, ct, h.URL("kr.example", "/form")))
		if resp.StatusCode != 403 {
			t.Fatalf("status %d: a part list cut off by the hold limit must not let an image rule be skipped", resp.StatusCode)
		}
		assertUntouched(t, h.KR)
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"fail_closed":true`) })
	})
	t.Run("plain image body, not multipart: decided on the header", func(t *testing.T) {
		resp, _ := do(t, h.Client(), newReq(t, "PUT", h.URL("jp.example", "/a.png"), []byte(marker(t)), "image/png"))
		if resp.StatusCode != 403 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

func TestReportOnlyLetsThroughAndLogs(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: `
version: 1
report_only: true
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`})
	body := []byte(marker(t))
	resp, _ := do(t, h.Client(), newReq(t, "POST", h.URL("kr.example", "/u"), body, "text/plain"))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: report-only must not block", resp.StatusCode)
	}
	assertBody(t, h.KR, body)
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"would_block":true`) })
	if got := metricSum(t, h, "sekisho_proxy_would_block_total", "rule", "block-foreign-uploads"); got != 1 {
		t.Errorf("sekisho_proxy_would_block_total = %v", got)
	}
}

func TestAuditLineForBlock(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	body, ct := multipartFile(t, "a.pdf", "application/pdf", []byte("pdf"))
	resp, _ := do(t, h.Client(), newReq(t, "POST", h.URL("kr.example", "/upload?token=secret"), body, ct))
	id := resp.Header.Get("X-Sekisho-Request-Id")
	// The line is written once the exchange is over, which may be a moment
	// after the client has the answer.
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"id":"`+id+`"`) })
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(h.Audit()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("audit line is not JSON: %q", l)
		}
		if v["id"] == id {
			line = v
		}
	}
	if line == nil {
		t.Fatalf("no audit line with id %s:\n%s", id, h.Audit())
	}
	want := map[string]any{
		"level": "WARN", "kind": "request", "method": "POST", "host": "kr.example", "path": "/upload",
		"country": "KR", "effective_country": "KR", "destination": "foreign", "service": "other",
		"rule": "block-foreign-uploads", "action": "block", "status": float64(403), "mode": "http",
		"content_type": "multipart/form-data", "upload_bytes": float64(0), "client_group": "other",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("audit %s = %v, want %v", k, line[k], v)
		}
	}
	if strings.Contains(h.Audit(), "secret") {
		t.Error("the query string must not be logged")
	}
}

func TestMetricsAfterKnownSequence(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	c := h.Client()
	do(t, c, newReq(t, "GET", h.URL("kr.example", "/"), nil, ""))
	do(t, c, newReq(t, "GET", h.URL("kr.example", "/"), nil, ""))
	do(t, c, newReq(t, "POST", h.URL("kr.example", "/"), []byte("abc"), "text/plain"))
	do(t, c, newReq(t, "POST", h.URL("jp.example", "/"), []byte("abcde"), "text/plain"))
	waitFor(t, func() bool { return strings.Count(h.Audit(), "\n") == 4 })
	for _, tc := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"http", "other", "KR", "allow", "other"}, 2},
		{[]string{"http", "other", "KR", "block", "other"}, 1},
		{[]string{"http", "other", "JP", "allow", "other"}, 1},
	} {
		l := tc.labels
		got := metricSum(t, h, "sekisho_proxy_requests_total", "mode", l[0], "service", l[1], "country", l[2], "action", l[3], "client_group", l[4])
		if got != tc.want {
			t.Errorf("requests%v = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if got := metricSum(t, h, "sekisho_proxy_upload_bytes_total", "country", "JP"); got != 5 {
		t.Errorf("upload bytes to JP = %v, want 5", got)
	}
	if got := metricSum(t, h, "sekisho_proxy_blocked_total", "rule", "block-foreign-uploads"); got != 1 {
		t.Errorf("blocked = %v, want 1", got)
	}
}

func TestRequestsToTheProxyItself(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	c := h.Raw(t)
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", h.Addr)
	resp, text := readResponse(t, bufio.NewReader(c))
	if resp.StatusCode != 200 || !strings.Contains(text, "forward proxy") {
		t.Errorf("GET / on the proxy port: %d %q", resp.StatusCode, text)
	}
	c = h.Raw(t)
	fmt.Fprintf(c, "GET https://jp.example/ HTTP/1.1\r\nHost: jp.example\r\n\r\n")
	resp, _ = readResponse(t, bufio.NewReader(c))
	if resp.StatusCode != 400 {
		t.Errorf("absolute-form https: %d, want 400 (HTTPS goes through CONNECT)", resp.StatusCode)
	}
}

// metricSum adds up the samples of a metric family whose labels include
// the given name/value pairs.
func metricSum(t *testing.T, h *proxytest.Harness, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := h.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func TestPathRulesSeeThroughSpelling(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: `
version: 1
rules:
  - name: no-upload-endpoint
    paths: [/upload]
    action: block
`})
	for _, p := range []string{"/upload", "/%75pload", "/x/../upload", "//upload", "/./upload/file"} {
		t.Run(p, func(t *testing.T) {
			c := h.Raw(t)
			fmt.Fprintf(c, "GET http://jp.example:%d%s HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.Port, p)
			resp, text := readResponse(t, bufio.NewReader(c))
			if resp.StatusCode != 403 || !strings.Contains(text, "no-upload-endpoint") {
				t.Fatalf("status %d: %.200s", resp.StatusCode, text)
			}
		})
	}
	assertUntouched(t, h.JP)
	resp, _ := do(t, h.Client(), newReq(t, "GET", h.URL("jp.example", "/download"), nil, ""))
	if resp.StatusCode != 200 {
		t.Fatalf("other paths: %d", resp.StatusCode)
	}
}

// TestClientConnectionCloseKeepsUpstreamAlive: a client that closes its own
// connection after each request (Connection: close) must not make sekisho
// drop its pooled upstream connection.
func TestClientConnectionCloseKeepsUpstreamAlive(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	for i := 0; i < 5; i++ {
		c := h.Raw(t)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: jp.example\r\nConnection: close\r\n\r\n", h.URL("jp.example", "/n"))
		resp, _ := readResponse(t, bufio.NewReader(c))
		if resp.StatusCode != 200 || !resp.Close {
			t.Fatalf("request %d: status %d, close %v (the client asked to close)", i, resp.StatusCode, resp.Close)
		}
	}
	if n := h.JP.Conns(); n != 1 {
		t.Errorf("5 requests from closing clients made %d upstream connections; want 1", n)
	}
}

func TestServerLogRateLimitsAcceptErrors(t *testing.T) {
	var buf bytes.Buffer
	l := proxy.NewServerLogForTest(slog.New(slog.NewTextHandler(&buf, nil)))
	for i := 0; i < 50; i++ {
		fmt.Fprintf(l, "http: Accept error: accept tcp 127.0.0.1:3128: accept4: too many open files; retrying in 5ms\n")
	}
	if n := strings.Count(buf.String(), "cannot accept client connections"); n != 1 {
		t.Errorf("%d warnings for 50 accept errors in a burst; want 1:\n%s", n, buf.String())
	}
	fmt.Fprintf(l, "http: TLS handshake error from 1.2.3.4: EOF\n")
	if strings.Contains(buf.String(), "TLS handshake") {
		t.Error("other net/http messages are debug, not shown at info")
	}
}

// TestUpstreamSilentCloseRetried: a domestic server that closes every
// kept-alive connection after one answer, without "Connection: close" (an
// idle timeout racing the next request), costs the client nothing: the GET
// is sent again on a new connection, and no 502 reaches the browser.
func TestUpstreamSilentCloseRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.1.9:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
				if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					req.Body.Close()
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()
	res := proxytest.DefaultResolver()
	res["flaky.example"] = []netip.Addr{netip.MustParseAddr("127.0.1.9")}
	h := proxytest.New(t, proxytest.Options{Resolver: res})
	port := ln.Addr().(*net.TCPAddr).Port
	client := h.Client()
	for i := range 4 {
		resp, err := client.Get(fmt.Sprintf("http://flaky.example:%d/%d", port, i))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		time.Sleep(20 * time.Millisecond) // the close reaches the proxy's pooled connection
	}
	if n := conns.Load(); n != 4 {
		t.Errorf("upstream saw %d connections, want 4", n)
	}
}

// TestClientAbortIsNotAnUpstreamError: a client that goes away while the
// upstream is still answering (a browser cancels requests all the time)
// is recorded as client_closed with status 499, not as a 502 upstream
// error that would inflate the dashboards' error panels.
func TestClientAbortIsNotAnUpstreamError(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	c := h.Raw(t)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.URL("jp.example", "/slow"))
	time.Sleep(200 * time.Millisecond)
	_ = c.Close()
	waitFor(t, func() bool { return strings.Contains(h.Audit(), `"reason":"client_closed"`) })
	if !strings.Contains(h.Audit(), `"status":499`) {
		t.Errorf("audit line lacks status 499:\n%s", h.Audit())
	}
	if n := metricSum(t, h, "sekisho_proxy_upstream_errors_total"); n != 0 {
		t.Errorf("upstream errors %v after a client abort, want 0", n)
	}
}

// TestShutdownWaitsForHandlers: when the drain deadline passes, Shutdown
// closes the connections and returns only once their handlers have
// written their audit lines (the caller closes the audit log next).
func TestShutdownWaitsForHandlers(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	c := h.Raw(t)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: jp.example\r\n\r\n", h.URL("jp.example", "/slow"))
	waitFor(t, func() bool { return metricSum(t, h, "sekisho_proxy_active_connections") == 1 })
	time.Sleep(100 * time.Millisecond) // the request is upstream now
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = h.Proxy.Shutdown(ctx)
	if !strings.Contains(h.Audit(), `"path":"/slow"`) {
		t.Errorf("no audit line for the request cut at shutdown:\n%s", h.Audit())
	}
}
