package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// measurement is one value a scenario produced for its target.
type measurement struct {
	id string
	v  float64
}

// smallGets is scenario 1: many clients, each on its own kept-alive
// connection (its own Transport, one idle connection), GET a 17-byte body
// as fast as they can for the duration.
func (b *bench) smallGets(t *target) ([]measurement, error) {
	url := "http://" + b.up.HTTP + "/small"
	res := runLoad(b.ctx, b.opt.clients, b.opt.warmup, b.opt.duration, t.pid(), func(int) (func() error, func()) {
		tr := t.transport(nil)
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		return func() error { return getSmall(tr, req) }, tr.CloseIdleConnections
	})
	out := []measurement{
		{mSmallRPS, res.rate()},
		{mSmallP50, ms(percentile(res.lat, 0.50))},
		{mSmallP99, ms(percentile(res.lat, 0.99))},
		{mSmallErr, float64(res.errs)},
	}
	if !t.direct() && res.ops > 0 {
		out = append(out, measurement{mSmallCPU, res.cpu / float64(res.ops) * 1e6})
	}
	b.noteErrors("small GETs", t, res)
	return out, nil
}

// getSmall makes one request and reads the whole response.
func getSmall(rt http.RoundTripper, req *http.Request) error {
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(smallBody)) {
		return fmt.Errorf("%s, %d bytes", resp.Status, n)
	}
	return nil
}

// newTunnels is scenario 3: per iteration a new client connection, a
// CONNECT to the upstream's address, a TLS handshake with the upstream
// through the tunnel (not intercepted; no session resumption), one small
// GET, close.
func (b *bench) newTunnels(t *target) ([]measurement, error) {
	cfg := &tls.Config{ServerName: "tunnel." + benchDomain, RootCAs: b.up.CA.Pool, NextProtos: []string{"http/1.1"},
		CurvePreferences: b.opt.curves()}
	res := runLoad(b.ctx, b.opt.workers, b.opt.warmup, b.opt.duration, t.pid(), func(int) (func() error, func()) {
		return func() error { return b.tlsOnce(t, b.up.TLS, hostPort(cfg.ServerName, b.up.TLS), cfg) }, nil
	})
	out := []measurement{
		{mNewRate, res.rate()},
		{mNewP99, ms(percentile(res.lat, 0.99))},
		{mNewErr, float64(res.errs)},
	}
	if !t.direct() && res.ops > 0 {
		out = append(out, measurement{mNewCPU, res.cpu / float64(res.ops) * 1e6})
	}
	b.noteErrors("new tunnels", t, res)
	return out, nil
}

// tlsOnce opens a tunnel to connectTo (directly: the upstream's address),
// shakes hands with cfg, makes one GET of the small body for host (the
// Host header: name and port) and closes the connection, as a browser
// closes an idle one: without "Connection: close", which a proxy might
// apply to its own upstream connection.
func (b *bench) tlsOnce(t *target, connectTo, host string, cfg *tls.Config) error {
	c, err := t.dialTunnel(b.ctx, connectTo, b.up.TLS)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(opTimeout))
	tc := tls.Client(c, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	if _, err := io.WriteString(tc, "GET /small HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(tc, 1024), nil)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != int64(len(smallBody)) {
		return fmt.Errorf("%s, %d bytes", resp.Status, n)
	}
	return nil
}

// noteErrors records failures of a load in the report's notes.
func (b *bench) noteErrors(what string, t *target, res loadResult) {
	if res.errs > 0 {
		b.notef("%s, %s: %d of %d operations failed (last error: %v)", what, t.name, res.errs, res.errs+res.ops, res.lastErr)
	}
}

// hostPort is name with the port of addr.
func hostPort(name, addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return net.JoinHostPort(name, port)
}
