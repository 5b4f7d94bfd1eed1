package tunnel

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const testTimeout = 10 * time.Second

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(tb testing.TB) (dialed, accepted *net.TCPConn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c
	}()
	d, err := net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		tb.Fatal(err)
	}
	a, ok := <-ch
	if !ok {
		d.Close()
		tb.Fatal("accept failed")
	}
	tb.Cleanup(func() { d.Close(); a.Close() })
	return d, a.(*net.TCPConn)
}

// rig is a tunnel under test: app is the client application's end,
// server the upstream server's end; Run relays between the other two ends.
type rig struct {
	app, server *net.TCPConn
	done        chan Result
}

func start(tb testing.TB, prefix []byte, budget int64, enforce bool) *rig {
	tb.Helper()
	app, clientSide := tcpPair(tb)
	upstreamSide, server := tcpPair(tb)
	for _, c := range []*net.TCPConn{app, server} {
		_ = c.SetDeadline(time.Now().Add(testTimeout))
	}
	r := &rig{app: app, server: server, done: make(chan Result, 1)}
	go func() { r.done <- Run(clientSide, upstreamSide, prefix, budget, enforce, nil) }()
	return r
}

func (r *rig) result(tb testing.TB) Result {
	tb.Helper()
	select {
	case res := <-r.done:
		return res
	case <-time.After(testTimeout):
		tb.Fatal("Run did not return")
		return Result{}
	}
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed^0x5ec1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// send writes b to c in a goroutine, then half-closes; the returned channel
// gets the write error (nil when all was written).
func send(c *net.TCPConn, b []byte) <-chan error {
	ch := make(chan error, 1)
	go func() {
		_, err := c.Write(b)
		if err == nil {
			err = c.CloseWrite()
		}
		ch <- err
	}()
	return ch
}

// readAll reads c to EOF in a goroutine.
func readAll(c *net.TCPConn) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		b, err := io.ReadAll(c)
		ch <- readResult{b, err}
	}()
	return ch
}

type readResult struct {
	b   []byte
	err error
}

func TestRunRelaysBothWays(t *testing.T) {
	const up, down = 4 << 20, 3<<20 + 17
	tests := []struct {
		name    string
		budget  int64
		enforce bool
		prefix  int
	}{
		{name: "unlimited", budget: Unlimited, enforce: true},
		{name: "unlimited with prefix", budget: Unlimited, enforce: true, prefix: 517},
		{name: "budget not reached", budget: up + 1000, enforce: true, prefix: 517},
		{name: "budget not reached, report-only", budget: up + 1000, enforce: false, prefix: 517},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upData := randomBytes(up, uint64(i)+1)
			downData := randomBytes(down, uint64(i)+100)
			prefix, rest := upData[:tt.prefix], upData[tt.prefix:]
			r := start(t, prefix, tt.budget, tt.enforce)

			// Both directions at once, so that neither waits for the other.
			upErr, downErr := send(r.app, rest), send(r.server, downData)
			atServer, atApp := readAll(r.server), readAll(r.app)

			if err := <-upErr; err != nil {
				t.Fatalf("client write: %v", err)
			}
			if err := <-downErr; err != nil {
				t.Fatalf("server write: %v", err)
			}
			if got := <-atServer; got.err != nil || !bytes.Equal(got.b, upData) {
				t.Errorf("upstream received %d bytes (err %v), want the %d bytes sent, byte-exact", len(got.b), got.err, len(upData))
			}
			if got := <-atApp; got.err != nil || !bytes.Equal(got.b, downData) {
				t.Errorf("client received %d bytes (err %v), want the %d bytes sent, byte-exact", len(got.b), got.err, len(downData))
			}
			res := r.result(t)
			if res.Up != up || res.Down != down {
				t.Errorf("Up, Down = %d, %d; want %d, %d", res.Up, res.Down, up, down)
			}
			if res.BudgetExceeded || res.Err != nil {
				t.Errorf("BudgetExceeded, Err = %v, %v; want false, nil", res.BudgetExceeded, res.Err)
			}
		})
	}
}

func TestRunHalfClose(t *testing.T) {
	t.Run("client finishes first", func(t *testing.T) {
		r := start(t, nil, Unlimited, true)
		if err := <-send(r.app, []byte("request")); err != nil {
			t.Fatal(err)
		}
		// The upstream sees the client's EOF while the tunnel stays open...
		got, err := io.ReadAll(r.server)
		if err != nil || string(got) != "request" {
			t.Fatalf("upstream read %q, %v; want \"request\" then EOF", got, err)
		}
		// ...and can still answer, at length.
		reply := randomBytes(1<<20, 7)
		if err := <-send(r.server, reply); err != nil {
			t.Fatalf("upstream write after client EOF: %v", err)
		}
		back, err := io.ReadAll(r.app)
		if err != nil || !bytes.Equal(back, reply) {
			t.Errorf("client read %d bytes, %v; want the %d-byte reply", len(back), err, len(reply))
		}
		if res := r.result(t); res.Up != 7 || res.Down != int64(len(reply)) || res.Err != nil {
			t.Errorf("Result = %+v", res)
		}
	})
	t.Run("upstream finishes first", func(t *testing.T) {
		r := start(t, nil, 1<<20, true)
		if err := <-send(r.server, []byte("banner")); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r.app)
		if err != nil || string(got) != "banner" {
			t.Fatalf("client read %q, %v; want \"banner\" then EOF", got, err)
		}
		body := randomBytes(100_000, 8)
		if err := <-send(r.app, body); err != nil {
			t.Fatalf("client write after upstream EOF: %v", err)
		}
		up, err := io.ReadAll(r.server)
		if err != nil || !bytes.Equal(up, body) {
			t.Errorf("upstream read %d bytes, %v; want %d", len(up), err, len(body))
		}
		if res := r.result(t); res.Up != int64(len(body)) || res.Down != 6 || res.Err != nil {
			t.Errorf("Result = %+v", res)
		}
	})
}

func TestRunBudget(t *testing.T) {
	const budget = 1000
	tests := []struct {
		name    string
		budget  int64
		enforce bool
		prefix  int // bytes of the stream that are the prefix
		total   int // bytes of the stream in all (prefix included)
		// wantUp is what the upstream receives (and Result.Up).
		wantUp       int
		wantExceeded bool
	}{
		{name: "under budget", budget: budget, enforce: true, total: budget - 1, wantUp: budget - 1},
		{name: "exactly reached then EOF", budget: budget, enforce: true, total: budget, wantUp: budget},
		{name: "one byte over", budget: budget, enforce: true, total: budget + 1, wantUp: budget, wantExceeded: true},
		{name: "far over", budget: 64 << 10, enforce: true, total: 4 << 20, wantUp: 64 << 10, wantExceeded: true},
		{name: "prefix counts, exactly reached", budget: budget, enforce: true, prefix: 600, total: budget, wantUp: budget},
		{name: "prefix counts, one byte over", budget: budget, enforce: true, prefix: 600, total: budget + 1, wantUp: budget, wantExceeded: true},
		{name: "prefix equals budget then EOF", budget: budget, enforce: true, prefix: budget, total: budget, wantUp: budget},
		{name: "prefix equals budget, one more byte", budget: budget, enforce: true, prefix: budget, total: budget + 1, wantUp: budget, wantExceeded: true},
		{name: "prefix larger than budget", budget: budget, enforce: true, prefix: 1500, total: 1500, wantUp: budget, wantExceeded: true},
		{name: "prefix larger than budget, more follows", budget: budget, enforce: true, prefix: 1500, total: 5000, wantUp: budget, wantExceeded: true},
		{name: "budget 0, nothing sent", budget: 0, enforce: true, total: 0, wantUp: 0},
		{name: "budget 0, one byte", budget: 0, enforce: true, total: 1, wantUp: 0, wantExceeded: true},
		{name: "budget 0, prefix", budget: 0, enforce: true, prefix: 1, total: 1, wantUp: 0, wantExceeded: true},

		// Report-only: the excess is reported and still delivered.
		{name: "report-only, exactly reached", budget: budget, total: budget, wantUp: budget},
		{name: "report-only, one byte over", budget: budget, total: budget + 1, wantUp: budget + 1, wantExceeded: true},
		{name: "report-only, far over", budget: budget, prefix: 600, total: 2 << 20, wantUp: 2 << 20, wantExceeded: true},
		{name: "report-only, prefix larger than budget", budget: budget, prefix: 1500, total: 1500, wantUp: 1500, wantExceeded: true},
		{name: "report-only, prefix larger than budget, more follows", budget: budget, prefix: 1500, total: 5000, wantUp: 5000, wantExceeded: true},
		{name: "report-only, budget 0", budget: 0, total: 1, wantUp: 1, wantExceeded: true},
		{name: "report-only, budget 0, nothing sent", budget: 0, total: 0, wantUp: 0},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := randomBytes(tt.total, uint64(i)+1)
			r := start(t, stream[:tt.prefix], tt.budget, tt.enforce)
			sent := send(r.app, stream[tt.prefix:])
			closed := tt.wantExceeded && tt.enforce

			got, err := io.ReadAll(r.server)
			if err != nil {
				t.Fatalf("upstream read: %v", err)
			}
			if len(got) != tt.wantUp || !bytes.Equal(got, stream[:len(got)]) {
				t.Errorf("upstream received %d bytes (prefix of the stream: %v), want exactly the first %d",
					len(got), bytes.Equal(got, stream[:min(len(got), len(stream))]), tt.wantUp)
			}
			if closed {
				// The tunnel is torn down: the client's end sees EOF or a
				// reset, not silence.
				_ = r.app.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := r.app.Read(make([]byte, 1))
				var ne net.Error
				if n != 0 || err == nil || (errors.As(err, &ne) && ne.Timeout()) {
					t.Errorf("client read after budget exceeded = %d, %v; want EOF or reset", n, err)
				}
				// And the upstream's end is closed, not just half-closed.
				_ = r.server.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if !writeFails(r.server) {
					t.Error("upstream connection still accepts writes after the budget was exceeded")
				}
			} else {
				if err := <-sent; err != nil {
					t.Fatalf("client write: %v", err)
				}
				// The tunnel goes on: the upstream answers and the client reads it.
				if err := <-send(r.server, []byte("reply")); err != nil {
					t.Fatalf("upstream write: %v", err)
				}
				back, err := io.ReadAll(r.app)
				if err != nil || string(back) != "reply" {
					t.Errorf("client read %q, %v; want \"reply\"", back, err)
				}
			}
			res := r.result(t)
			if res.Up != int64(tt.wantUp) {
				t.Errorf("Result.Up = %d, want %d", res.Up, tt.wantUp)
			}
			if res.BudgetExceeded != tt.wantExceeded {
				t.Errorf("Result.BudgetExceeded = %v, want %v", res.BudgetExceeded, tt.wantExceeded)
			}
			if res.Err != nil {
				t.Errorf("Result.Err = %v, want nil (closing for the budget is not an error)", res.Err)
			}
			if !closed && res.Down != 5 {
				t.Errorf("Result.Down = %d, want 5", res.Down)
			}
		})
	}
}

// writeFails reports whether writes to c fail within a few tries: the
// peer's close is seen as a reset after the first write.
func writeFails(c *net.TCPConn) bool {
	for range 50 {
		if _, err := c.Write([]byte("x")); err != nil {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func TestRunCloseClient(t *testing.T) {
	app, clientSide := tcpPair(t)
	upstreamSide, server := tcpPair(t)
	_ = app.SetDeadline(time.Now().Add(testTimeout))
	_ = server.SetDeadline(time.Now().Add(testTimeout))
	w := &closeCounter{TCPConn: clientSide}
	var calls atomic.Int32
	closeFn := func() error { calls.Add(1); return clientSide.Close() }

	done := make(chan Result, 1)
	go func() { done <- Run(w, upstreamSide, nil, 10, true, closeFn) }()
	// Exceed the budget: Run closes both sides itself.
	send(app, make([]byte, 11))
	if _, err := io.ReadAll(server); err != nil {
		t.Fatal(err)
	}
	var res Result
	select {
	case res = <-done:
	case <-time.After(testTimeout):
		t.Fatal("Run did not return")
	}
	if !res.BudgetExceeded {
		t.Fatalf("BudgetExceeded = false")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("closeClient called %d times, want 1", n)
	}
	if n := w.closes.Load(); n != 0 {
		t.Errorf("client.Close called %d times; closeClient must be called instead", n)
	}
}

type closeCounter struct {
	*net.TCPConn
	closes atomic.Int32
}

func (c *closeCounter) Close() error { c.closes.Add(1); return c.TCPConn.Close() }

func TestRunReportsErrors(t *testing.T) {
	r := start(t, nil, Unlimited, true)
	if _, err := r.app.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadFull(r.server, make([]byte, 7)); err != nil {
		t.Fatalf("upstream read %d: %v", got, err)
	}
	// An abortive close (RST) is an error, not the end of a stream.
	_ = r.app.SetLinger(0)
	_ = r.app.Close()
	res := r.result(t)
	if res.Err == nil {
		t.Errorf("Result.Err = nil after the client reset the connection; Result = %+v", res)
	}
	if res.Up != 7 {
		t.Errorf("Result.Up = %d, want 7", res.Up)
	}
	// Run closed the upstream.
	if _, err := io.ReadAll(r.server); err != nil {
		t.Errorf("upstream read after client reset: %v, want EOF", err)
	}
}

// TestRunSplices checks that the relay keeps Linux's splice(2): bytes moved
// by splice never enter user space, so they do not count in the process's
// rchar (/proc/self/io), while a copy through a buffer counts every byte
// once more. The test's own reader reads the stream once (n bytes); a
// relay that copies through user space reads it a second time.
func TestRunSplices(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("splice is Linux only")
	}
	if _, err := rchar(); err != nil {
		t.Skipf("no I/O accounting: %v", err)
	}
	const n = 32 << 20
	tests := []struct {
		name    string
		budget  int64
		prefix  int
		enforce bool
		down    bool // measure the download direction instead
	}{
		{name: "upload, unlimited", budget: Unlimited, enforce: true},
		{name: "upload, within budget (io.CopyN)", budget: 2 * n, enforce: true, prefix: 517},
		{name: "upload, report-only", budget: 1 << 20, enforce: false},
		{name: "download", budget: 1 << 20, enforce: true, down: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, n)
			r := start(t, make([]byte, tt.prefix), tt.budget, tt.enforce)
			from, to := r.app, r.server
			if tt.down {
				from, to = r.server, r.app
				_ = r.app.CloseWrite()
			} else {
				_ = r.server.CloseWrite()
			}
			before, _ := rchar()
			sent := send(from, data)
			buf := make([]byte, 1<<20)
			var got int64
			for {
				k, err := to.Read(buf)
				got += int64(k)
				if err != nil {
					break
				}
			}
			after, _ := rchar()
			if err := <-sent; err != nil {
				t.Fatal(err)
			}
			res := r.result(t)
			if want := int64(n + tt.prefix); got != want {
				t.Fatalf("received %d bytes, want %d", got, want)
			}
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			// Spliced: about n (our reader). Copied: about 2n.
			if delta := after - before; delta > n+n/2 {
				t.Errorf("process read %d bytes through user space to move %d (want about %d): the relay copies instead of splicing", delta, n, n)
			}
		})
	}
}

func rchar() (int64, error) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "rchar:"); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, errors.New("no rchar in /proc/self/io")
}

// BenchmarkTunnel is a bulk upload through Run between TCP pairs.
func BenchmarkTunnel(b *testing.B) {
	const size = 64 << 20
	data := make([]byte, size)
	for _, bc := range []struct {
		name   string
		budget int64
	}{
		{name: "unlimited", budget: Unlimited},
		{name: "budget", budget: 2 * size},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			buf := make([]byte, 1<<20)
			for b.Loop() {
				b.StopTimer()
				r := start(b, nil, bc.budget, true)
				_ = r.server.CloseWrite()
				b.StartTimer()
				sent := send(r.app, data)
				var got int
				for {
					k, err := r.server.Read(buf)
					got += k
					if err != nil {
						break
					}
				}
				if err := <-sent; err != nil {
					b.Fatal(err)
				}
				res := r.result(b)
				if got != size || res.Up != size {
					b.Fatalf("moved %d (Up %d), want %d", got, res.Up, size)
				}
			}
		})
	}
}
