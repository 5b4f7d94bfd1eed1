package main

import (
	"bufio"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"time"
)

// targetRelay is a calibration target: the least a Go CONNECT proxy can
// do. It reads the CONNECT head, dials, answers 200 and runs io.Copy both
// ways between the two *net.TCPConn (so Linux splices), nothing else: no
// rules, no logs, no limits. Its ratios to direct are the ceiling for a
// Go tunnel on this machine, and its descriptors per idle tunnel are Go's
// (not sekisho's) cost. It runs as a child process of this binary.
const targetRelay = "go-relay"

// relayEnv makes this binary run as the relay, listening on its value.
const relayEnv = "SEKISHO_BENCH_RELAY"

// relayDef starts the relay (plain mode, tunnel scenarios only).
func relayDef() *proxyDef {
	return &proxyDef{
		name:      targetRelay,
		version:   "io.Copy between *net.TCPConn, " + goVersion(),
		scenarios: []string{"bulk", "newtunnel", "idle"},
		start: func(_ *bench, dir, addr string, _ mode) (*exec.Cmd, *x509.CertPool, error) {
			exe, err := os.Executable()
			if err != nil {
				return nil, nil, err
			}
			cmd := exec.Command(exe)
			cmd.Dir = dir
			cmd.Env = []string{relayEnv + "=" + addr}
			return cmd, nil, nil
		},
	}
}

// runRelay serves CONNECT on addr until killed (or for an hour at most).
func runRelay(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return 1
	}
	time.AfterFunc(time.Hour, func() { os.Exit(0) })
	for {
		c, err := ln.Accept()
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go relayConn(c.(*net.TCPConn))
	}
}

func relayConn(c *net.TCPConn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		// Plain GETs only answer the readiness probe.
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	up, err := net.DialTimeout("tcp", req.Host, 10*time.Second)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	u := up.(*net.TCPConn)
	defer u.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if _, err := u.Write(b); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(u, c)
		_ = u.CloseWrite()
	}()
	_, _ = io.Copy(c, u)
	_ = c.CloseWrite()
	wg.Wait()
}

func goVersion() string { return runtime.Version() }
