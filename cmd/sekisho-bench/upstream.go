package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// upstreamIP is where every upstream listens: 127.0.1.0/24 is Japan in the
// test geo database, so every destination is domestic to sekisho.
const upstreamIP = "127.0.1.1"

// benchDomain is the domain of the intercepted sites: the upstream's
// certificate is for *.benchDomain, and sekisho's inspection rule opens it.
const benchDomain = "bench.example"

// smallBody is the small GETs' response body.
var smallBody = []byte("sekisho-bench ok\n")

// upstreams are the loopback servers every target talks to. They run in
// the harness process, shared by all targets, with keep-alive on.
type upstreams struct {
	HTTP   string // small GETs: http://HTTP/small
	Upload string // plain POST sink: http://Upload/upload
	Bulk   string // raw TCP source/sink for tunnel throughput
	TLS    string // HTTPS small GETs, certificate for *.bench.example and the IP
	Idle   string // raw TCP: echoes one byte, then holds the connection (child process)
	CA     *certAuthority

	servers   []*http.Server
	listeners []net.Listener
	wg        sync.WaitGroup
	connsMu   sync.Mutex
	conns     map[net.Conn]struct{} // raw connections, closed on shutdown
	stopSink  func()

	// Every intercepted site has its own certificate, as real sites do (a
	// proxy that mimics the server's certificate, as Squid's bump after a
	// peek does, would otherwise sign one wildcard for all of them).
	// prepareSites issues them before a run; others get the wildcard.
	wildcard *tls.Certificate
	siteKey  *ecdsa.PrivateKey
	sites    sync.Map // SNI name → *tls.Certificate
}

// certificate picks the site's own certificate by SNI.
func (u *upstreams) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c, ok := u.sites.Load(hello.ServerName); ok {
		return c.(*tls.Certificate), nil
	}
	return u.wildcard, nil
}

// prepareSites issues a certificate (for exactly that name) for each name
// that has none, in parallel, outside any measurement.
func (u *upstreams) prepareSites(names []string) error {
	var wg sync.WaitGroup
	errs := make([]error, runtime.NumCPU())
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(names); i += len(errs) {
				if _, ok := u.sites.Load(names[i]); ok {
					continue
				}
				c, err := u.CA.leafWithKey(u.siteKey, []string{names[i]}, nil)
				if err != nil {
					errs[w] = err
					return
				}
				u.sites.Store(names[i], &c)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// forgetSites drops the certificates of names used up.
func (u *upstreams) forgetSites(names []string) {
	for _, n := range names {
		u.sites.Delete(n)
	}
}

// startUpstreams starts every upstream on upstreamIP.
func startUpstreams(errLog *log.Logger, curves []tls.CurveID) (*upstreams, error) {
	ca, err := newCA("sekisho-bench upstream CA")
	if err != nil {
		return nil, err
	}
	u := &upstreams{CA: ca, conns: map[net.Conn]struct{}{}}
	leaf, err := ca.leaf([]string{"*." + benchDomain, benchDomain}, []net.IP{net.ParseIP(upstreamIP)})
	if err != nil {
		return nil, err
	}
	small := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain"}
		h["Content-Length"] = []string{strconv.Itoa(len(smallBody))}
		_, _ = w.Write(smallBody)
	})
	listen := func() (net.Listener, error) {
		ln, err := net.Listen("tcp", upstreamIP+":0")
		if err != nil {
			u.close()
			return nil, fmt.Errorf("upstream listener on %s (127.0.0.0/8 must be on lo): %w", upstreamIP, err)
		}
		u.listeners = append(u.listeners, ln)
		return ln, nil
	}
	serve := func(h http.Handler, tlsCfg *tls.Config) (string, error) {
		ln, err := listen()
		if err != nil {
			return "", err
		}
		srv := &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout: 5 * time.Minute, ErrorLog: errLog}
		u.servers = append(u.servers, srv)
		u.wg.Add(1)
		go func() {
			defer u.wg.Done()
			if tlsCfg != nil {
				_ = srv.ServeTLS(ln, "", "")
			} else {
				_ = srv.Serve(ln)
			}
		}()
		return ln.Addr().String(), nil
	}
	if u.HTTP, err = serve(small, nil); err != nil {
		return nil, err
	}
	if u.Upload, err = serve(http.HandlerFunc(uploadSink), nil); err != nil {
		return nil, err
	}
	u.wildcard = &leaf
	if u.siteKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{NextProtos: []string{"h2", "http/1.1"}, GetCertificate: u.certificate,
		MinVersion: tls.VersionTLS12, CurvePreferences: curves}
	if u.TLS, err = serve(small, tlsCfg); err != nil {
		return nil, err
	}
	for _, raw := range []struct {
		addr    *string
		handler func(net.Conn)
	}{{&u.Bulk, bulkConn}} {
		ln, err := listen()
		if err != nil {
			return nil, err
		}
		*raw.addr = ln.Addr().String()
		u.wg.Add(1)
		go u.acceptRaw(ln, raw.handler)
	}
	if u.Idle, u.stopSink, err = startSink(); err != nil {
		u.close()
		return nil, err
	}
	return u, nil
}

// acceptRaw serves a raw TCP listener, one goroutine per connection.
func (u *upstreams) acceptRaw(ln net.Listener, handle func(net.Conn)) {
	defer u.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // EMFILE and the like
			continue
		}
		u.connsMu.Lock()
		u.conns[c] = struct{}{}
		u.connsMu.Unlock()
		go func() {
			defer func() {
				_ = c.Close()
				u.connsMu.Lock()
				delete(u.conns, c)
				u.connsMu.Unlock()
			}()
			handle(c)
		}()
	}
}

// close stops every upstream.
func (u *upstreams) close() {
	for _, s := range u.servers {
		_ = s.Close()
	}
	for _, ln := range u.listeners {
		_ = ln.Close()
	}
	u.connsMu.Lock()
	for c := range u.conns {
		_ = c.Close()
	}
	u.connsMu.Unlock()
	u.wg.Wait()
	if u.stopSink != nil {
		u.stopSink()
	}
}

// bulkBuf is what the bulk source sends and where the sinks read into.
const bulkBufSize = 1 << 20

var zeros = make([]byte, bulkBufSize)

// Bulk protocol: the client sends one command byte and a big-endian uint64
// size. 'D': the upstream sends size bytes. 'U': the client sends size
// bytes and the upstream answers one byte 'K' when it has them all. Either
// way the connection then ends when the client closes it.
const (
	bulkDownload = 'D'
	bulkUpload   = 'U'
)

func bulkConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	var hdr [9]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return
	}
	n := int64(binary.BigEndian.Uint64(hdr[1:]))
	switch hdr[0] {
	case bulkDownload:
		for n > 0 {
			k, err := c.Write(zeros[:min(n, bulkBufSize)])
			n -= int64(k)
			if err != nil {
				return
			}
		}
	case bulkUpload:
		buf := make([]byte, bulkBufSize)
		for n > 0 {
			k, err := c.Read(buf[:min(n, bulkBufSize)])
			n -= int64(k)
			if err != nil {
				return
			}
		}
		if _, err := c.Write([]byte{'K'}); err != nil {
			return
		}
	default:
		return
	}
	_, _ = io.Copy(io.Discard, c) // until the client closes
}

// idleConn echoes the first byte (proof that the tunnel reaches the
// upstream), then holds the connection until the client closes it.
func idleConn(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return
	}
	if _, err := c.Write(b[:]); err != nil {
		return
	}
	_, _ = c.Read(b[:])
}

// uploadSink reads a request body with large reads and answers its size.
func uploadSink(w http.ResponseWriter, r *http.Request) {
	buf := make([]byte, bulkBufSize)
	var n int64
	for {
		k, err := r.Body.Read(buf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = fmt.Fprintf(w, "%d", n)
}
