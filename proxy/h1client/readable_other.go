//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package h1client

import "net"

// peeker cannot peek here; a stale pooled connection is then caught only
// by the retry of a request that got nothing back.
type peeker struct{}

func newPeeker(net.Conn) *peeker { return nil }

func (*peeker) readable() bool { return false }
