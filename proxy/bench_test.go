package proxy_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/sekisho/sekisho/proxy/proxytest"
)

// BenchmarkPlainGET is one small GET through the proxy on a kept-alive
// client connection: the per-request cost of sekisho's HTTP path (decision,
// dial pinning, goproxy, audit line, metrics).
func BenchmarkPlainGET(b *testing.B) {
	h := proxytest.New(b, proxytest.Options{})
	client := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(h.ProxyURL), MaxIdleConnsPerHost: 4}}
	url := h.URL("jp.example", "/small")
	get := func() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	get()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		get()
	}
}
