package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

// openWebSocket sends a WebSocket upgrade through the proxy and reads the
// 101 and the upstream's greeting.
func openWebSocket(t *testing.T, h *proxytest.Harness, host string) (net.Conn, *bufio.Reader, int) {
	t.Helper()
	c := h.Raw(t)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", h.URL(host, "/ws"), host)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "hello from") {
			t.Fatalf("greeting %q %v", line, err)
		}
	}
	return c, br, resp.StatusCode
}

// afterHead returns what an upstream received after the first request head.
func afterHead(b []byte) []byte {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return b[i+4:]
	}
	return nil
}

func TestWebSocketUploadBudget(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	const budget = 1 << 20
	send := func(c net.Conn, n int) int {
		chunk := bytes.Repeat([]byte("w"), 16<<10)
		sent := 0
		for sent < n {
			k, err := c.Write(chunk[:min(len(chunk), n-sent)])
			sent += k
			if err != nil {
				break
			}
		}
		return sent
	}
	t.Run("foreign: closed at the budget", func(t *testing.T) {
		c, br, code := openWebSocket(t, h, "kr.example")
		if code != 101 {
			t.Fatalf("upgrade status %d", code)
		}
		send(c, 3<<20)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, br); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("WebSocket still open after the client exceeded its budget")
			}
		}
		time.Sleep(50 * time.Millisecond)
		if got := len(afterHead(h.KR.Received())); got > budget {
			t.Fatalf("foreign upstream received %d WebSocket bytes; budget %d", got, budget)
		}
		waitFor(t, func() bool { return strings.Contains(h.Audit(), `"mode":"websocket"`) })
		if !strings.Contains(h.Audit(), `"budget_exceeded":true`) {
			t.Errorf("audit must record the exceeded budget:\n%s", h.Audit())
		}
	})
	t.Run("domestic: unlimited", func(t *testing.T) {
		c, _, code := openWebSocket(t, h, "jp.example")
		if code != 101 {
			t.Fatalf("upgrade status %d", code)
		}
		const n = 3 << 20
		if sent := send(c, n); sent != n {
			t.Fatalf("sent %d of %d", sent, n)
		}
		waitFor(t, func() bool { return len(afterHead(h.JP.Received())) == n })
	})
}

func TestSlowClients(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Limits: proxy.Limits{
		ReadHeaderTimeout: 300 * time.Millisecond,
		BodyIdleTimeout:   300 * time.Millisecond,
	}})
	closedWithin := func(t *testing.T, c net.Conn, d time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("connection still open after %v", d)
		}
	}
	t.Run("headers that never end", func(t *testing.T) {
		c := h.Raw(t)
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: jp.example\r\n", h.URL("jp.example", "/"))
		closedWithin(t, c, 3*time.Second)
	})
	t.Run("a body that stops coming", func(t *testing.T) {
		c := h.Raw(t)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: jp.example\r\nContent-Length: 100000\r\n\r\nonly the start", h.URL("jp.example", "/stall"))
		start := time.Now()
		closedWithin(t, c, 5*time.Second)
		if time.Since(start) > 4*time.Second {
			t.Fatal("took too long")
		}
	})
}

func TestGracefulShutdownDrains(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{})
	var wg sync.WaitGroup
	wg.Add(1)
	var status int
	var reqErr error
	go func() {
		defer wg.Done()
		resp, err := h.Client().Get(h.URL("jp.example", "/slow"))
		if err != nil {
			reqErr = err
			return
		}
		status = resp.StatusCode
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	// A tunnel that stays open: Shutdown must close it at the deadline.
	tc, tbr, resp := connect(t, h, fmt.Sprintf("jp.example:%d", h.SinkPort))
	if resp.StatusCode != 200 {
		t.Fatalf("CONNECT %d", resp.StatusCode)
	}
	_, _ = tc.Write([]byte("idle"))
	time.Sleep(200 * time.Millisecond) // the slow request is in flight

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_ = h.Proxy.Shutdown(ctx)
	wg.Wait()
	if reqErr != nil || status != 200 {
		t.Fatalf("in-flight request was not drained: %d %v", status, reqErr)
	}
	if el := time.Since(start); el > 4*time.Second {
		t.Fatalf("shutdown took %v", el)
	}
	_ = tc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.Copy(io.Discard, tbr); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("tunnel still open after shutdown")
		}
	}
	if _, err := net.DialTimeout("tcp", h.Addr, time.Second); err == nil {
		t.Error("the proxy still accepts connections after shutdown")
	}
}
