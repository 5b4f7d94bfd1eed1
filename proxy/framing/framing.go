package framing

import (
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Problem says why a request's framing is ambiguous; Problem(0) = None.
type Problem uint8

// The problems a request head can have. When several apply, the first in
// this list that the scanner meets wins: ObsoleteLineFolding is reported as
// soon as the folded line is seen, the others at the end of the head in the
// order ContentLengthWithTransferEncoding, TransferEncodingHTTP10,
// UnsupportedTransferEncoding, ConflictingContentLength.
const (
	None Problem = iota
	// ContentLengthWithTransferEncoding: both headers are present, in any
	// order, any case, whatever their values. net/http would drop
	// Content-Length and read the body as chunked.
	ContentLengthWithTransferEncoding
	// TransferEncodingHTTP10: Transfer-Encoding on an HTTP/1.0 request.
	// net/http ignores it (Go issue 12785); a backend might not.
	TransferEncodingHTTP10
	// UnsupportedTransferEncoding: anything but exactly one
	// Transfer-Encoding header whose value is "chunked" (ASCII case
	// insensitive, surrounding blanks ignored): "gzip, chunked",
	// "chunked, chunked", two header lines, "identity", an empty value.
	// net/http answers these with 501 itself.
	UnsupportedTransferEncoding
	// ConflictingContentLength: several Content-Length values that are not
	// byte-for-byte equal, or one that is not a plain decimal number below
	// 2^63. net/http answers these with 400 itself.
	ConflictingContentLength
	// ObsoleteLineFolding: a header line starting with SP or HTAB (RFC 9112
	// §5.2 obs-fold). net/http joins it to the previous line; a backend
	// might read it as a header of its own.
	ObsoleteLineFolding

	numProblems
)

var problemText = [numProblems]string{
	None:                              "no framing problem",
	ContentLengthWithTransferEncoding: "request has both Content-Length and Transfer-Encoding",
	TransferEncodingHTTP10:            "Transfer-Encoding in an HTTP/1.0 request",
	UnsupportedTransferEncoding:       "Transfer-Encoding other than a single \"chunked\"",
	ConflictingContentLength:          "conflicting or invalid Content-Length",
	ObsoleteLineFolding:               "header line folded onto the next line (obs-fold)",
}

// String returns a short English reason, fit for the 400 page and the log.
func (p Problem) String() string {
	if p < numProblems {
		return problemText[p]
	}
	return "framing.Problem(" + strconv.Itoa(int(p)) + ")"
}

// ErrUnsupported is returned by CloseRead, CloseWrite when the wrapped
// connection cannot half-close.
var ErrUnsupported = errors.New("framing: wrapped connection cannot half-close")

// Conn wraps a client net.Conn. Read passes every byte through unchanged
// while scanning the request stream; Next reports, request by request,
// whether its framing was ambiguous.
//
// Wrap the plain TCP connection (net/http recognises TLS connections by
// their type). Hijack on an http.Server that accepted a *Conn returns the
// *Conn; NetConn unwraps it.
type Conn struct {
	conn net.Conn
	next atomic.Uint64 // ordinals handed out by Next
	s    scanner
}

// NewConn wraps c.
func NewConn(c net.Conn) *Conn {
	return &Conn{conn: c}
}

// Read reads from the wrapped connection and scans what it returns. The
// bytes are not modified. Read must not be called concurrently with itself.
func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.conn.Read(p)
	if n > 0 && c.s.state != stStopped {
		c.s.scan(p[:n])
	}
	return n, err
}

// Next returns the Problem recorded for the next request, by ordinal, or
// None. Call it exactly once for each request that net/http hands to the
// handler, in order (see the package documentation).
//
// Next may run concurrently with Read: net/http reads ahead on a background
// goroutine while the handler runs.
func (c *Conn) Next() Problem {
	k := c.next.Add(1)
	r := c.s.rec.Load()
	if r != 0 && r>>8 == k {
		return Problem(r & 0xff)
	}
	return None
}

// NetConn returns the wrapped connection: after Hijack (CONNECT tunnels) it
// gives back the bare *net.TCPConn so that io.Copy can splice. Bytes read
// from it directly are not scanned.
func (c *Conn) NetConn() net.Conn { return c.conn }

// Write writes to the wrapped connection.
func (c *Conn) Write(p []byte) (int, error) { return c.conn.Write(p) }

// ReadFrom lets io.Copy(conn, src) use the wrapped connection's ReadFrom
// when the kernel can move the bytes (splice or sendfile from a socket or
// a file). Any other source is copied through a pooled buffer: the
// connection's own fallback allocates 32 KiB per call, and net/http calls
// it for every response longer than 512 bytes, so on a busy proxy that one
// allocation was most of the garbage. Only the write direction is
// forwarded: reads must go through Read to be scanned.
func (c *Conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.conn.(io.ReaderFrom); ok && kernelCopyable(r) {
		return rf.ReadFrom(r)
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(writerOnly{c.conn}, r, *bp)
}

// copyBufs are the buffers of ReadFrom's copies.
var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}

// kernelCopyable reports whether a *net.TCPConn's ReadFrom can splice or
// sendfile from r.
func kernelCopyable(r io.Reader) bool {
	switch r := r.(type) {
	case *net.TCPConn, *net.UnixConn, *os.File:
		return true
	case *io.LimitedReader:
		return kernelCopyable(r.R)
	}
	return false
}

// writerOnly hides every method but Write, so that io.Copy cannot loop back
// into ReadFrom.
type writerOnly struct{ io.Writer }

// CloseWrite shuts down the writing side if the wrapped connection can
// (as *net.TCPConn can), and returns ErrUnsupported otherwise.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return ErrUnsupported
}

// CloseRead shuts down the reading side if the wrapped connection can, and
// returns ErrUnsupported otherwise.
func (c *Conn) CloseRead() error {
	if cr, ok := c.conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return ErrUnsupported
}

// Close closes the wrapped connection.
func (c *Conn) Close() error { return c.conn.Close() }

// LocalAddr returns the wrapped connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// RemoteAddr returns the wrapped connection's remote address.
func (c *Conn) RemoteAddr() net.Addr { return c.conn.RemoteAddr() }

// SetDeadline sets the wrapped connection's deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.conn.SetDeadline(t) }

// SetReadDeadline sets the wrapped connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.conn.SetReadDeadline(t) }

// SetWriteDeadline sets the wrapped connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// NewListener returns a listener whose Accept wraps every connection in a
// *Conn.
func NewListener(l net.Listener) net.Listener { return listener{l} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return NewConn(c), nil
}
