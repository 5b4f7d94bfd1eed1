package proxy_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/proxy/proxytest"
)

// requireTool finds a real client program. CI sets SEKISHO_REQUIRE_TOOLS=1
// (and installs the tools), so there a missing tool fails instead of
// skipping.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("SEKISHO_REQUIRE_TOOLS") != "" {
			t.Fatalf("%s is required (SEKISHO_REQUIRE_TOOLS is set): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// curl runs curl through the proxy and returns the HTTP status and body.
func curl(t *testing.T, h *proxytest.Harness, args ...string) (int, string) {
	t.Helper()
	bin := requireTool(t, "curl")
	all := append([]string{"--silent", "--show-error", "--max-time", "20", "--noproxy", "",
		"--proxy", "http://" + h.Addr, "--write-out", "\n%{http_code}"}, args...)
	cmd := exec.Command(bin, all...)
	cmd.Env = append(os.Environ(), "http_proxy=", "https_proxy=", "HTTP_PROXY=", "HTTPS_PROXY=", "no_proxy=", "NO_PROXY=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	s := out.String()
	i := strings.LastIndexByte(s, '\n')
	code, convErr := strconv.Atoi(strings.TrimSpace(s[i+1:]))
	if convErr != nil {
		t.Fatalf("curl %v: %v\n%s%s", args, err, s, errb.String())
	}
	return code, s[:max(i, 0)]
}

func TestCurl(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	dir := t.TempDir()
	photo := filepath.Join(dir, "photo.jpg")
	m := marker(t)
	if err := os.WriteFile(photo, []byte(m+strings.Repeat("\xd8", 300000)), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("GET through the proxy", func(t *testing.T) {
		code, body := curl(t, h, h.URL("kr.example", "/page"))
		if code != 200 || !strings.HasPrefix(body, "KR GET /page") {
			t.Fatalf("%d %q", code, body)
		}
	})
	t.Run("file upload abroad is blocked", func(t *testing.T) {
		before := len(h.KR.Received())
		code, body := curl(t, h, "-F", "file=@"+photo, h.URL("kr.example", "/upload"))
		if code != 403 || !strings.Contains(body, "この送信はブロックされました") {
			t.Fatalf("%d %.300q", code, body)
		}
		assertNoMarker(t, h.KR, m)
		if after := len(h.KR.Received()); after != before {
			t.Fatalf("foreign server received %d bytes during a blocked upload", after-before)
		}
	})
	t.Run("file upload at home goes through", func(t *testing.T) {
		code, body := curl(t, h, "-F", "file=@"+photo, h.URL("jp.example", "/upload"))
		if code != 200 || !strings.HasPrefix(body, "JP POST /upload") {
			t.Fatalf("%d %q", code, body)
		}
		if b := h.JP.Bodies(); len(b) == 0 || !bytes.Contains(b[len(b)-1], []byte(m)) {
			t.Fatal("the file did not arrive")
		}
	})
	t.Run("chunked upload abroad is blocked", func(t *testing.T) {
		code, _ := curl(t, h, "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+photo, h.URL("us.example", "/upload"))
		if code != 403 {
			t.Fatalf("status %d", code)
		}
		assertUntouched(t, h.US)
	})
	t.Run("JSON for API clients", func(t *testing.T) {
		code, body := curl(t, h, "-H", "Accept: application/json", "--data", "x=1", h.URL("cn.example", "/api"))
		if code != 403 || !strings.Contains(body, `"error": "upload_blocked"`) {
			t.Fatalf("%d %q", code, body)
		}
	})
	t.Run("CONNECT tunnel is closed at the upload budget", func(t *testing.T) {
		big := filepath.Join(dir, "big.bin")
		if err := os.WriteFile(big, bytes.Repeat([]byte("b"), 3<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		// --proxytunnel makes curl CONNECT even for http://.
		before := len(h.KR.Received())
		code, _ := curl(t, h, "--proxytunnel", "--data-binary", "@"+big, h.URL("kr.example", "/upload"))
		if code == 200 {
			t.Fatal("a 3 MiB upload through a foreign tunnel succeeded")
		}
		if got := len(h.KR.Received()) - before; got > 1<<20 {
			t.Fatalf("foreign server received %d bytes through the tunnel; budget is 1 MiB", got)
		}
	})
}

func TestCurlInspected(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true, Rules: inspectAll})
	dir := t.TempDir()
	caFile := filepath.Join(dir, "sekisho-ca.pem")
	if err := os.WriteFile(caFile, h.CA.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	photo := filepath.Join(dir, "photo.jpg")
	m := marker(t)
	if err := os.WriteFile(photo, []byte(m+strings.Repeat("\xd8", 200000)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("HTTPS upload abroad is blocked inside TLS", func(t *testing.T) {
		code, body := curl(t, h, "--cacert", caFile, "-F", "file=@"+photo, h.TLSURL("kr.example", "/upload"))
		if code != 403 || !strings.Contains(body, "この送信はブロックされました") {
			t.Fatalf("%d %.300q", code, body)
		}
		assertUntouched(t, h.KR)
	})
	t.Run("HTTPS upload at home goes through", func(t *testing.T) {
		code, body := curl(t, h, "--cacert", caFile, "-F", "file=@"+photo, h.TLSURL("jp.example", "/upload"))
		if code != 200 || !strings.HasPrefix(body, "JP POST /upload") {
			t.Fatalf("%d %q", code, body)
		}
		if b := h.JP.Bodies(); len(b) == 0 || !bytes.Contains(b[len(b)-1], []byte(m)) {
			t.Fatal("the file did not arrive")
		}
	})
	t.Run("a client that does not trust the CA fails the handshake", func(t *testing.T) {
		bin := requireTool(t, "curl")
		cmd := exec.Command(bin, "--silent", "--max-time", "10", "--noproxy", "", "--proxy", "http://"+h.Addr, h.TLSURL("jp.example", "/"))
		cmd.Env = append(os.Environ(), "CURL_CA_BUNDLE=/nonexistent", "SSL_CERT_FILE=/nonexistent", "http_proxy=", "https_proxy=")
		if err := cmd.Run(); err == nil {
			t.Fatal("curl accepted sekisho's leaf without trusting its CA")
		}
	})
}
