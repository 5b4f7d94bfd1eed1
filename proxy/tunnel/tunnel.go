// Package tunnel relays the bytes of a CONNECT tunnel that is not
// intercepted, counting them and enforcing an upload budget.
//
// Without TLS interception sekisho cannot see what a tunnel carries; what it
// can do is count what the client sends. A tunnel to a foreign address gets
// a budget (1 MiB by default): enough for a TLS handshake and the requests
// of reading a page, not enough to upload a file. Once the client has sent
// the budget and tries to send more, the tunnel is closed and that byte is
// never forwarded.
//
// The copies run io.Copy / io.CopyN between bare *net.TCPConn values so that
// Linux moves the data with splice(2), without copying it through user
// space; io.CopyN's LimitedReader keeps splice and gives the budget for
// free. Non-goals: tunnel knows nothing of rules or HTTP; it gets a number.
package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
)

// Unlimited is the budget that never closes a tunnel.
const Unlimited int64 = -1

// Result is what a finished tunnel did.
type Result struct {
	Up   int64 // bytes from the client forwarded upstream
	Down int64 // bytes from upstream forwarded to the client
	// BudgetExceeded is true when the tunnel was closed because the client
	// sent more than the budget; the first byte over it was not forwarded.
	BudgetExceeded bool
	// Err is the first error that ended a direction, other than the normal
	// end of a stream or a close caused by the other direction ending.
	Err error
}

// Conn is what the relay needs from each side: a stream that can be
// half-closed. *net.TCPConn is one.
type Conn interface {
	net.Conn
	CloseWrite() error
}

// Run relays between client and upstream until both directions end, then
// closes both. prefix holds bytes the client sent before the tunnel started
// (read ahead by the HTTP parser); they are sent first and count against
// the budget. budget is in bytes, or Unlimited. When enforce is false an
// exceeded budget is only reported (report-only mode): the tunnel goes on.
//
// Run returns when the tunnel is over. closeFn, when not nil, is called
// instead of client.Close to close the client side (the caller may hold a
// wrapper that must see the close, such as a connection limiter).
func Run(client, upstream Conn, prefix []byte, budget int64, enforce bool, closeClient func() error) Result {
	if closeClient == nil {
		closeClient = client.Close
	}
	var (
		res      Result
		wg       sync.WaitGroup
		errOnce  sync.Once
		closeAll sync.Once
	)
	setErr := func(err error) {
		if err != nil && !errors.Is(err, net.ErrClosed) {
			errOnce.Do(func() { res.Err = err })
		}
	}
	abort := func() {
		closeAll.Do(func() {
			_ = upstream.Close()
			_ = closeClient()
		})
	}

	wg.Add(1)
	go func() { // upload: client → upstream
		defer wg.Done()
		n, exceeded, err := copyUp(upstream, client, prefix, budget, enforce)
		res.Up = n
		if exceeded {
			res.BudgetExceeded = true
			if enforce {
				abort()
				return
			}
		}
		if err != nil {
			setErr(err)
			abort()
			return
		}
		_ = upstream.CloseWrite()
	}()

	// download: upstream → client, on this goroutine.
	n, err := copyStream(client, upstream, -1)
	res.Down = n
	if err != nil {
		setErr(err)
		abort()
	} else {
		_ = client.CloseWrite()
	}
	wg.Wait()
	abort()
	return res
}

// copyStream copies src to dst until EOF or limit bytes (limit < 0: no
// limit): spliced between TCP connections without holding a pipe while
// idle (see splice_linux.go), io.Copy otherwise. EOF is not an error.
func copyStream(dst io.Writer, src io.Reader, limit int64) (int64, error) {
	d, ok1 := dst.(io.ReadWriter)
	s, ok2 := src.(io.ReadWriter)
	if ok1 && ok2 {
		n, err := spliceCopy(d, s, limit)
		if !errors.Is(err, errNotTCP) {
			return n, err
		}
	}
	if limit < 0 {
		return io.Copy(dst, src)
	}
	n, err := io.CopyN(dst, src, limit)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return n, err
}

func copyUp(dst io.Writer, src io.Reader, prefix []byte, budget int64, enforce bool) (n int64, exceeded bool, err error) {
	if len(prefix) > 0 {
		p := prefix
		if enforce && budget >= 0 && int64(len(p)) > budget {
			p = p[:budget]
			exceeded = true
		}
		k, err := dst.Write(p)
		n += int64(k)
		if err != nil || exceeded {
			return n, exceeded, err
		}
		if budget >= 0 && n > budget {
			exceeded = true // report-only: keep going
		}
	}
	if budget < 0 || exceeded || !enforce {
		k, err := copyStream(dst, src, -1)
		n += k
		if budget >= 0 && n > budget {
			exceeded = true
		}
		return n, exceeded, err
	}
	remaining := budget - n
	k, err := copyStream(dst, src, remaining)
	n += k
	if err != nil {
		return n, false, err
	}
	if k < remaining {
		return n, false, nil // the client finished within its budget
	}
	// The budget is used up exactly. One more byte means the client is
	// over it; EOF means it ended right at the limit.
	var one [1]byte
	m, rerr := src.Read(one[:])
	if m > 0 {
		return n, true, nil
	}
	if rerr != nil && !errors.Is(rerr, io.EOF) {
		return n, false, rerr
	}
	return n, false, nil
}
