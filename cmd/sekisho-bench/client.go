package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// opTimeout bounds every single connection, handshake and request, so that
// a stuck proxy costs a failed operation, never a hung run.
const opTimeout = 15 * time.Second

// target is what a scenario measures: the direct connection (proc nil) or
// one running proxy.
type target struct {
	name string
	proc *proc
}

func (t *target) direct() bool { return t.proc == nil }

// proxyURL is the proxy's URL for http.Transport.Proxy (nil for direct).
func (t *target) proxyURL() *url.URL {
	if t.proc == nil {
		return nil
	}
	return &url.URL{Scheme: "http", Host: t.proc.addr}
}

// pid is the proxy process whose CPU and memory are read (0 for direct).
func (t *target) pid() int {
	if t.proc == nil {
		return 0
	}
	return t.proc.pid
}

// caPool is what a client must trust for an intercepted connection: the
// proxy's CA, or the upstream CA when there is no proxy.
func (t *target) caPool(up *upstreams) *x509.CertPool {
	if t.proc == nil || t.proc.caPool == nil {
		return up.CA.Pool
	}
	return t.proc.caPool
}

// transport is an HTTP/1.1 client transport with one kept-alive connection,
// through the target's proxy.
func (t *target) transport(tlsCfg *tls.Config) *http.Transport {
	tr := &http.Transport{
		MaxIdleConns:          1,
		MaxIdleConnsPerHost:   1,
		MaxConnsPerHost:       1,
		IdleConnTimeout:       time.Minute,
		DisableCompression:    true,
		ResponseHeaderTimeout: opTimeout,
		TLSHandshakeTimeout:   opTimeout,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     false,
		DialContext:           dialer.DialContext,
	}
	if u := t.proxyURL(); u != nil {
		tr.Proxy = http.ProxyURL(u)
	} else {
		// Direct: names of the intercepted sites are the harness's to
		// resolve; every upstream is at upstreamIP.
		tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return dialer.DialContext(ctx, network, net.JoinHostPort(upstreamIP, port))
		}
	}
	return tr
}

var dialer = &net.Dialer{Timeout: opTimeout}

// dialTunnel opens a connection to hostport: directly (dialing the
// upstream address) or through the proxy with CONNECT. connectHost is what
// the CONNECT names (a name for intercepted sites; the address otherwise).
func (t *target) dialTunnel(ctx context.Context, connectHost, upstreamAddr string) (net.Conn, error) {
	if t.proc == nil {
		return dialer.DialContext(ctx, "tcp", upstreamAddr)
	}
	c, err := dialer.DialContext(ctx, "tcp", t.proc.addr)
	if err != nil {
		return nil, err
	}
	dl := time.Now().Add(opTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", connectHost, connectHost); err != nil {
		_ = c.Close()
		return nil, err
	}
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("CONNECT %s: %w", connectHost, err)
	}
	if resp.StatusCode != http.StatusOK {
		_ = c.Close()
		return nil, fmt.Errorf("CONNECT %s: %s", connectHost, resp.Status)
	}
	if !stop() { // cancelled meanwhile: the deadline may be set to now
		_ = c.Close()
		return nil, ctx.Err()
	}
	_ = c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufConn{Conn: c, r: br}, nil
	}
	return c, nil
}

// bufConn is a connection whose first bytes were read ahead.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
