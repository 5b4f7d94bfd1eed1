//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package h1client

import (
	"net"
	"syscall"
)

// peeker asks an idle socket whether it has something to read (bytes, the
// server's close, an error) without reading it: a pooled connection in
// that state must not carry the next request. It costs one non-blocking
// recvfrom(MSG_PEEK) per reuse, and no allocation (it is made once per
// connection).
type peeker struct {
	rc   syscall.RawConn
	fn   func(fd uintptr) bool
	rerr error
}

func newPeeker(c net.Conn) *peeker {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &peeker{rc: rc}
	p.fn = p.peek
	return p
}

func (p *peeker) peek(fd uintptr) bool {
	var b [1]byte
	_, _, p.rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return true // never wait for readiness
}

// readable reports whether the socket has something to read.
func (p *peeker) readable() bool {
	if p == nil {
		return false
	}
	if err := p.rc.Read(p.fn); err != nil {
		return true
	}
	return p.rerr != syscall.EAGAIN && p.rerr != syscall.EWOULDBLOCK
}
