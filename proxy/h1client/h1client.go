// Package h1client sends bodyless HTTP/1.1 requests (GET and HEAD) to a
// pinned upstream address on the caller's goroutine, over a pool of
// kept-alive connections, plain or TLS.
//
// It exists for speed under load. net/http's Transport runs every exchange
// through two more goroutines per connection (a write loop and a read
// loop) and hands the request and the response between them over
// channels; on a proxy that serves thousands of small GETs a second on two
// cores, those hand-offs are a tenth of the CPU and most of the tail
// latency. A bodyless request needs none of that: write it, read the
// response head, and let the caller read the body. Requests with a body
// (uploads, where the server may answer before the body is sent) and
// upgrades keep using net/http's Transport.
//
// A TLS connection is verified for the name it was dialed for and pooled
// under that name and address together, so that a connection verified for
// one name never carries a request for another.
package h1client

import (
	"bufio"
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// Client is a pool of upstream connections keyed by the address dialed.
// The zero value is not usable: Dial is required.
type Client struct {
	// Dial connects to the pinned address; sekisho's dialer checks it
	// against the denied networks once more.
	Dial func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// MaxIdlePerAddr bounds the kept-alive connections per address
	// (default 256).
	MaxIdlePerAddr int
	// MaxIdle bounds the kept-alive connections in all (default 1024):
	// beyond it the least recently used one is closed, so that a day of
	// browsing thousands of sites does not hold thousands of sockets.
	MaxIdle int
	// IdleTimeout closes a pooled connection unused this long
	// (default 90 s).
	IdleTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for the response head after
	// the request is written (0: no limit but the context).
	ResponseHeaderTimeout time.Duration
	// MaxResponseHeaderBytes bounds the response head (default 256 KiB).
	MaxResponseHeaderBytes int64
	// TLSConfig is the base of the client side of https connections
	// (roots, minimum version, session cache); ServerName and NextProtos
	// are set per connection. nil: the system roots.
	TLSConfig *tls.Config
	// TLSHandshakeTimeout bounds the upstream TLS handshake (default 10 s).
	TLSHandshakeTimeout time.Duration

	mu     sync.Mutex
	idle   map[poolKey][]*conn
	lru    list.List // of *conn, every pooled one, most recently pooled first
	closed bool
}

// poolKey is what a pooled connection may be reused for: the address it
// is connected to and, for TLS, the name its certificate was verified for.
type poolKey struct {
	addr    netip.AddrPort
	tlsName string // "": plain HTTP
}

// Eligible reports whether req can take this path: GET or HEAD, http or
// https, no body, no protocol upgrade.
func Eligible(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	if (req.URL.Scheme != "http" && req.URL.Scheme != "https") || (req.Body != nil && req.Body != http.NoBody) ||
		req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
		return false
	}
	_, upgrade := req.Header["Upgrade"]
	return !upgrade
}

// conn is one upstream connection.
type conn struct {
	cl    *Client
	key   poolKey
	peek  *peeker // on the socket under nc (which may be TLS)
	nc    net.Conn
	lr    *limitReader
	br    *bufio.Reader
	bw    *bufio.Writer
	timer *time.Timer   // closes it when idle too long
	elem  *list.Element // in Client.lru while pooled
	// reused is set when it comes from the pool: a failure before any
	// response byte may then be the server's idle close, and is retried.
	reused bool
}

// limitReader bounds how much the response head may read.
type limitReader struct {
	r     net.Conn
	n     int64 // < 0: no limit
	total int64 // bytes read from the connection, ever
}

var errHeaderTooLarge = errors.New("upstream response header too large")

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n < 0 {
		n, err := l.r.Read(p)
		l.total += int64(n)
		return n, err
	}
	if l.n == 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	l.total += int64(n)
	return n, err
}

// RoundTrip sends req to addr and returns the response with its body
// unread; closing the body returns the connection to the pool when the
// body was read to its end. A request on a pooled connection that the
// server had closed is sent once more on a new connection (GET and HEAD
// are idempotent).
//
// With tlsName set, the connection is TLS and the server's certificate
// must be valid for tlsName (the name the client asked for, whatever
// address it resolved to); an empty tlsName means plain HTTP, and an
// https request then fails.
func (cl *Client) RoundTrip(req *http.Request, addr netip.AddrPort, tlsName string) (*http.Response, error) {
	if (req.URL.Scheme == "https") != (tlsName != "") {
		return nil, fmt.Errorf("h1client: %s request with TLS name %q", req.URL.Scheme, tlsName)
	}
	ctx := req.Context()
	key := poolKey{addr, tlsName}
	for attempt := 0; ; attempt++ {
		c, err := cl.get(ctx, key, attempt > 0)
		if err != nil {
			return nil, err
		}
		resp, retry, err := c.exchange(ctx, req)
		if err == nil {
			return resp, nil
		}
		c.close()
		if !retry || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// exchange writes the request and reads the response head. retry is set
// when nothing came back on a reused connection.
func (c *conn) exchange(ctx context.Context, req *http.Request) (resp *http.Response, retry bool, err error) {
	// A cancelled request (the client went away, shutdown) unblocks the
	// socket; the connection is then not reused.
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(aLongTimeAgo) })
	fail := func(err error, retryable bool) (*http.Response, bool, error) {
		stop()
		if ctx.Err() != nil {
			return nil, false, ctx.Err()
		}
		return nil, retryable && c.reused, err
	}
	if err := req.Write(c.bw); err != nil {
		return fail(err, true)
	}
	if err := c.bw.Flush(); err != nil {
		return fail(err, true)
	}
	if t := c.cl.ResponseHeaderTimeout; t > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(t))
	}
	c.lr.n = c.cl.maxHeaderBytes()
	before := c.lr.total // the pool holds only connections with nothing buffered
	for {
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			// Nothing at all came back: the server closed the idle
			// connection as the request went out. (ReadResponse reports
			// a clean EOF as io.ErrUnexpectedEOF.)
			nothing := c.lr.total == before &&
				(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || isReset(err))
			if errors.Is(err, errHeaderTooLarge) {
				err = fmt.Errorf("%w (more than %d bytes)", errHeaderTooLarge, c.cl.maxHeaderBytes())
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() && ctx.Err() == nil {
				err = fmt.Errorf("timeout awaiting response headers: %w", err)
			}
			return fail(err, nothing)
		}
		// 1xx (103 Early Hints, a stray 100) precede the real answer;
		// 101 is not asked for here.
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		break
	}
	c.lr.n = -1
	if c.cl.ResponseHeaderTimeout > 0 {
		_ = c.nc.SetReadDeadline(time.Time{})
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("upstream switched protocols on a request that asked for no upgrade"), false)
	}
	reuse := !resp.Close && !req.Close
	// No body (HEAD, 204, 304): nothing to read before reuse.
	resp.Body = &body{rc: resp.Body, c: c, stop: stop, reuse: reuse, eof: resp.Body == http.NoBody}
	return resp, false, nil
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// aLongTimeAgo is a deadline in the past: it makes blocked I/O return.
var aLongTimeAgo = time.Unix(1, 0)

// body hands the connection back to the pool once it has been read to
// its end.
type body struct {
	rc    io.ReadCloser
	c     *conn
	stop  func() bool
	reuse bool
	eof   bool
	done  bool
}

func (b *body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errors.New("h1client: read on closed body")
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close releases the connection: to the pool after a complete body,
// closed otherwise (the rest of an unread body is not drained).
func (b *body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	_ = b.rc.Close()
	stopped := b.stop() // false: the context fired and poisoned the socket
	if b.eof && b.reuse && stopped && b.c.br.Buffered() == 0 {
		b.c.cl.put(b.c)
	} else {
		b.c.close()
	}
	return nil
}

func (cl *Client) maxHeaderBytes() int64 {
	if cl.MaxResponseHeaderBytes > 0 {
		return cl.MaxResponseHeaderBytes
	}
	return 256 << 10
}

// get returns a pooled connection for key, or dials one (always, when
// fresh is set).
func (cl *Client) get(ctx context.Context, key poolKey, fresh bool) (*conn, error) {
	for !fresh {
		cl.mu.Lock()
		l := cl.idle[key]
		if len(l) == 0 {
			cl.mu.Unlock()
			break
		}
		c := l[len(l)-1] // the most recently used: least likely closed by the server
		l[len(l)-1] = nil
		cl.idle[key] = l[:len(l)-1]
		cl.lru.Remove(c.elem)
		c.elem = nil
		cl.mu.Unlock()
		c.timer.Stop()
		if c.peek.readable() {
			// Bytes the server sent after its response (a stray line, or
			// an unsolicited response that would answer the next request,
			// maybe another client's), or its close: not reusable.
			c.close()
			continue
		}
		c.reused = true
		return c, nil
	}
	nc, err := cl.Dial(ctx, key.addr)
	if err != nil {
		return nil, err
	}
	raw := nc
	if key.tlsName != "" {
		if nc, err = cl.handshake(ctx, nc, key.tlsName); err != nil {
			return nil, err
		}
	}
	c := &conn{cl: cl, key: key, peek: newPeeker(raw), nc: nc}
	c.lr = &limitReader{r: nc, n: -1}
	c.br = bufio.NewReaderSize(c.lr, 4<<10)
	c.bw = bufio.NewWriterSize(nc, 4<<10)
	return c, nil
}

// handshake runs the client side of TLS on nc for name, offering only
// HTTP/1.1. A failure (an untrusted or mismatched certificate among them)
// closes nc and is returned wrapped, so that errors.As finds
// *tls.CertificateVerificationError.
func (cl *Client) handshake(ctx context.Context, nc net.Conn, name string) (net.Conn, error) {
	var cfg *tls.Config
	if cl.TLSConfig != nil {
		cfg = cl.TLSConfig.Clone()
	} else {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	cfg.ServerName = name
	cfg.NextProtos = []string{"http/1.1"}
	timeout := cl.TLSHandshakeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	hctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", name, err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "" && p != "http/1.1" {
		_ = tc.Close()
		return nil, fmt.Errorf("TLS handshake with %s: server chose protocol %q, not http/1.1", name, p)
	}
	return tc, nil
}

// put returns c to the pool, or closes it when the pool is full or shut.
func (cl *Client) put(c *conn) {
	idle := cl.IdleTimeout
	if idle <= 0 {
		idle = 90 * time.Second
	}
	max := cl.MaxIdlePerAddr
	if max <= 0 {
		max = 256
	}
	cl.mu.Lock()
	if cl.closed || len(cl.idle[c.key]) >= max {
		cl.mu.Unlock()
		c.close()
		return
	}
	if cl.idle == nil {
		cl.idle = map[poolKey][]*conn{}
	}
	cl.idle[c.key] = append(cl.idle[c.key], c)
	c.elem = cl.lru.PushFront(c)
	if c.timer == nil {
		c.timer = time.AfterFunc(idle, func() { cl.expire(c) })
	} else {
		c.timer.Reset(idle)
	}
	maxAll := cl.MaxIdle
	if maxAll <= 0 {
		maxAll = 1024
	}
	var evicted *conn
	if cl.lru.Len() > maxAll {
		evicted = cl.lru.Back().Value.(*conn)
		cl.removeLocked(evicted)
	}
	cl.mu.Unlock()
	if evicted != nil {
		evicted.close()
	}
}

// removeLocked takes c out of the pool; it reports whether c was there.
func (cl *Client) removeLocked(c *conn) bool {
	if c.elem == nil {
		return false
	}
	cl.lru.Remove(c.elem)
	c.elem = nil
	l := cl.idle[c.key]
	for i, x := range l {
		if x == c {
			l = append(l[:i], l[i+1:]...)
			break
		}
	}
	if len(l) == 0 {
		delete(cl.idle, c.key)
	} else {
		cl.idle[c.key] = l
	}
	return true
}

// expire removes c from the pool when its idle timer fires.
func (cl *Client) expire(c *conn) {
	cl.mu.Lock()
	found := cl.removeLocked(c)
	cl.mu.Unlock()
	if found {
		c.close()
	}
}

func (c *conn) close() {
	if c.timer != nil {
		c.timer.Stop()
	}
	_ = c.nc.Close()
}

// CloseIdleConnections closes the pooled connections; with shutdown set
// the pool also stops taking connections back.
func (cl *Client) CloseIdleConnections(shutdown bool) {
	cl.mu.Lock()
	idle := cl.idle
	cl.idle = nil
	for _, l := range idle {
		for _, c := range l {
			c.elem = nil
		}
	}
	cl.lru.Init()
	if shutdown {
		cl.closed = true
	}
	cl.mu.Unlock()
	for _, l := range idle {
		for _, c := range l {
			c.close()
		}
	}
}

// IdleConns is the number of pooled connections (for tests and metrics).
func (cl *Client) IdleConns() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	n := 0
	for _, l := range cl.idle {
		n += len(l)
	}
	return n
}
